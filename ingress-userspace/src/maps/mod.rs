//! Kernel maps: the MapWriter seam, the aya-backed writer, its fake, the loader and counters.
