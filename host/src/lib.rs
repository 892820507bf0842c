//! sod: the library behind the `sod` binary.
