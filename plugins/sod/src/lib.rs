//! sod loss plugin.
