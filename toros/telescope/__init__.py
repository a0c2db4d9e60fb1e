"""The telescope daemon: dome, mount, camera and filter wheel; scheduling; the robotic night; FITS images."""
