//! stride data: image I/O, filters.
