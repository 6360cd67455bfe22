//! Reads which contract version a component speaks, before anything compiles it.

use wasmparser::{Encoding, Parser, Payload};

/// The contract version plugins are built against now (the SDK's); the host also loads older
/// ones (`bindings::ACCEPTED`).
pub const CONTRACT_VERSION: &str = "0.8.0";
/// The interface every plugin exports, without its version.
pub const PLUGIN_INTERFACE: &str = "hokan:policy/plugin";

/// What the bytes of a would-be plugin turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contract {
    /// A component exporting the plugin interface at this version.
    Speaks(String),
    /// A component that does not export the plugin interface at all.
    NotAPlugin,
    /// A core WebAssembly module, not a component.
    CoreModule,
    /// Not WebAssembly (the parser's reason).
    NotWasm(String),
}

/// Finds the version of `hokan:policy/plugin` among the component's top-level exports.
pub fn inspect(bytes: &[u8]) -> Contract {
    let mut depth = 0usize;
    let mut found = None;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = match payload {
            Ok(p) => p,
            Err(e) => return Contract::NotWasm(e.message().to_string()),
        };
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == Encoding::Module {
                    return Contract::CoreModule;
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    let export = match export {
                        Ok(e) => e,
                        Err(e) => return Contract::NotWasm(e.message().to_string()),
                    };
                    if let Some(version) = export
                        .name
                        .0
                        .strip_prefix(PLUGIN_INTERFACE)
                        .and_then(|rest| rest.strip_prefix('@'))
                    {
                        found = Some(version.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    match found {
        Some(v) => Contract::Speaks(v),
        None => Contract::NotAPlugin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_core_modules_are_told_apart() {
        assert!(matches!(inspect(b"not wasm at all"), Contract::NotWasm(_)));
        // The smallest core module: magic and version 1.
        assert_eq!(inspect(b"\0asm\x01\0\0\0"), Contract::CoreModule);
        // The smallest component: magic, version 0x0d, layer 1.
        assert_eq!(inspect(b"\0asm\x0d\0\x01\0"), Contract::NotAPlugin);
    }
}
