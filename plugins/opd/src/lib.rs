//! opd loss plugin.
