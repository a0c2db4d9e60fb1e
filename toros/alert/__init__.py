"""The alert daemon: LVK alerts in, ranked host galaxies out to every observatory's telescope."""
