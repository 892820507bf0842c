//! Host bindings generated from sdk/wit/tool.wit (world `composite-tool`, a superset of `tool`).

wasmtime::component::bindgen!({
    path: "../../sdk/wit",
    world: "composite-tool",
    imports: { default: async | trappable },
    exports: { default: async },
});
