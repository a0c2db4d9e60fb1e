"""The runtime shared by the three daemons: config, logging, clock, journal, events, workers, server.

It knows work orders and events, never telescopes or galaxies: each module adds its task handlers.
"""
