"""Wire-protocol simulators: the far end of each real driver (LX200 and the serial dome on a pty, an ASCOM
Alpaca HTTP server), backed by the clock-driven device simulators of ``devices/simulated.py``.

They let the real drivers be exercised without hardware — in the tests, and on a node during commissioning.
"""
