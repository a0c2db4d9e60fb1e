"""The preprocessor daemon: master bias/dark/flat frames and calibrated science frames."""
