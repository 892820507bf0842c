//! grpo loss plugin.
