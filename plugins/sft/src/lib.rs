//! sft loss plugin.
