"""The shared floor: what several rooms use and none owns.

Sites and their observing constraints, sky and site astronomy (the Sun, nights, apparent places), sky geometry,
the galaxy catalog index, FITS files as TOROS writes and checks them, pictures, notifications to people, who
asks for a work order, and the keys of the facts kept in the journal. The rooms (``alert``, ``telescope``,
``preprocessor``, ``web``) import from here and from the runtime, never from one another."""
