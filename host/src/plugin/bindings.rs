//! The host's only generated Wasm bindings. Everything outside `plugin/`
//! speaks the host's own types; `instance.rs` converts at this edge.

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../sdk/wit",
});

pub use rtap::plugin::types;
