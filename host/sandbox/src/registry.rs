//! The tool registry: loading a tool (reading, compiling or taking from the compile cache, pre-linking,
//! describing), the [`Tool`] handle and its [`Descriptor`], and finding a tool by name, loading it from the tools
//! directory on first use (by a caller or by a composing tool).
//!
//! A [`Tool`] owns what every call of it shares: its descriptor, artifact hash, pre-linked component, and the slot
//! for its instance made ahead ([`crate::ahead`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use crate::ahead::AheadSlot;
use crate::bindings::CompositeToolPre;
use crate::error::SandboxError;
use crate::sandbox::SandboxInner;
use crate::store::{CallIdentity, CallState, store_for_call};

/// What a tool says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The name the model calls it by.
    pub name: String,
    /// The tool's version.
    pub version: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
}

impl Descriptor {
    /// The OpenAI-style function schema a chat template puts into the system prompt.
    pub fn function_schema(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            }
        })
    }
}

/// A loaded tool: compiled, linked and described.
#[derive(Clone)]
pub struct Tool {
    pub(crate) inner: Arc<ToolInner>,
}

pub(crate) struct ToolInner {
    descriptor: Descriptor,
    artifact: String,
    path: PathBuf,
    pub(crate) pre: CompositeToolPre<CallState>,
    /// A fresh instance made ahead of the next stateless call (see `SandboxConfig::instances_ahead`).
    pub(crate) ahead: AheadSlot,
}

impl Tool {
    /// The tool's self-description.
    pub fn descriptor(&self) -> &Descriptor {
        &self.inner.descriptor
    }

    /// The tool's name.
    pub fn name(&self) -> &str {
        &self.inner.descriptor.name
    }

    /// `sha256:<hex>` of the artifact.
    pub fn artifact_hash(&self) -> &str {
        &self.inner.artifact
    }

    /// Where the artifact was loaded from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool")
            .field("name", &self.inner.descriptor.name)
            .field("artifact", &self.inner.artifact)
            .field("path", &self.inner.path)
            .finish()
    }
}

/// The loaded tools by name, and the directory tools not loaded yet are found in.
pub(crate) struct Registry {
    tools: RwLock<BTreeMap<String, Tool>>,
    tools_dir: Option<PathBuf>,
}

impl Registry {
    pub(crate) fn new(tools_dir: Option<PathBuf>) -> Self {
        Registry {
            tools: RwLock::new(BTreeMap::new()),
            tools_dir,
        }
    }

    /// The loaded tool called `name`.
    pub(crate) fn loaded(&self, name: &str) -> Option<Tool> {
        self.tools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// All loaded tools, sorted by name.
    pub(crate) fn all(&self) -> Vec<Tool> {
        let tools = self.tools.read().unwrap_or_else(|e| e.into_inner());
        tools.values().cloned().collect()
    }

    /// Names of the loaded tools, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let tools = self.tools.read().unwrap_or_else(|e| e.into_inner());
        tools.keys().cloned().collect()
    }

    /// Registers `tool` by name; a second artifact under a loaded tool's name is refused.
    fn insert(&self, tool: &Tool) -> Result<(), SandboxError> {
        let mut tools = self.tools.write().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = tools.get(tool.name())
            && existing.path() != tool.path()
        {
            return Err(SandboxError::DuplicateTool {
                name: tool.name().to_string(),
                first: existing.path().to_path_buf(),
                second: tool.path().to_path_buf(),
            });
        }
        tools.insert(tool.name().to_string(), tool.clone());
        Ok(())
    }

    /// `<tools_dir>/<name>.wasm` when it exists and `name` cannot escape the directory.
    fn artifact_path(&self, name: &str) -> Option<PathBuf> {
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let path = self.tools_dir.as_ref()?.join(format!("{name}.wasm"));
        (valid_name && path.is_file()).then_some(path)
    }

    fn unknown_tool(&self, name: &str) -> SandboxError {
        let mut available = self.names();
        if let Some(dir) = &self.tools_dir {
            available.extend(
                tool_files(dir)
                    .into_iter()
                    .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string)),
            );
        }
        available.sort();
        available.dedup();
        SandboxError::UnknownTool {
            name: name.to_string(),
            available: available.join(", "),
        }
    }
}

/// The `*.wasm` files of a directory, sorted.
pub(crate) fn tool_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "wasm"))
        .collect();
    paths.sort();
    paths
}

impl SandboxInner {
    /// The tool called `name`: already loaded, or loaded now from the tools directory.
    pub(crate) fn tool(self: &Arc<Self>, name: &str) -> Result<Tool, SandboxError> {
        // A loaded tool or an unknown name needs no executor, so async callers (an HTTP handler) may use
        // this for tools loaded up front; only loading an artifact runs guest code.
        if let Some(tool) = self.registry.loaded(name) {
            return Ok(tool);
        }
        match self.registry.artifact_path(name) {
            Some(path) => self.load_tool(&path),
            None => Err(self.registry.unknown_tool(name)),
        }
    }

    /// [`SandboxInner::tool`] for async callers: a composing tool's child call runs inside the executor,
    /// where starting another runtime (as the synchronous path does) would panic.
    pub(crate) async fn tool_async(self: &Arc<Self>, name: &str) -> Result<Tool, SandboxError> {
        if let Some(tool) = self.registry.loaded(name) {
            return Ok(tool);
        }
        match self.registry.artifact_path(name) {
            Some(path) => self.load_tool_async(&path).await,
            None => Err(self.registry.unknown_tool(name)),
        }
    }

    /// Loads (compiling or reading from the cache) the tool at `path`, describes it and registers it by
    /// name so that other tools can call it.
    pub(crate) fn load_tool(self: &Arc<Self>, path: &Path) -> Result<Tool, SandboxError> {
        wasmtime_wasi::runtime::in_tokio(self.load_tool_async(path))
    }

    /// [`SandboxInner::load_tool`] for async callers.
    async fn load_tool_async(self: &Arc<Self>, path: &Path) -> Result<Tool, SandboxError> {
        let bytes = std::fs::read(path).map_err(|source| SandboxError::ReadArtifact {
            path: path.to_path_buf(),
            source,
        })?;
        let hash = hex::encode(Sha256::digest(&bytes));
        let invalid = |reason: String| SandboxError::InvalidArtifact {
            path: path.to_path_buf(),
            reason,
        };
        let engine = &self.engine;
        let component = match &self.cache {
            Some(cache) => cache.load_or_compile(engine, &hash, &bytes),
            None => Component::new(engine, &bytes),
        }
        .map_err(|e| invalid(format!("{e:#}")))?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("{e:#}")))?;
        let pre = CompositeToolPre::new(instance_pre).map_err(|e| invalid(format!("{e:#}")))?;
        let descriptor = self.describe(&pre, path).await?;
        let tool = Tool {
            inner: Arc::new(ToolInner {
                descriptor,
                artifact: format!("sha256:{hash}"),
                path: path.to_path_buf(),
                pre,
                ahead: AheadSlot::default(),
            }),
        };
        self.registry.insert(&tool)?;
        Ok(tool)
    }

    async fn describe(
        self: &Arc<Self>,
        pre: &CompositeToolPre<CallState>,
        path: &Path,
    ) -> Result<Descriptor, SandboxError> {
        let fail = |reason: String| SandboxError::Describe {
            path: path.to_path_buf(),
            reason,
        };
        let identity = CallIdentity {
            seed: self.config.seed,
            call_key: "describe".to_string(),
            depth: 0,
        };
        let limits = self.config.default_limits;
        let mut store = store_for_call(&self.engine, limits, identity, Arc::downgrade(self));
        let raw = async {
            let instance = pre.instantiate_async(&mut store).await?;
            instance.call_describe(&mut store).await
        }
        .await
        .map_err(|e| fail(format!("{e:#}")))?;
        let parameters: serde_json::Value = serde_json::from_str(&raw.parameters)
            .map_err(|e| fail(format!("parameters is not valid JSON: {e}")))?;
        if raw.name.is_empty()
            || !raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(fail(format!(
                "name {:?} must be non-empty ASCII letters, digits, '_' or '-'",
                raw.name
            )));
        }
        if !parameters.is_object() {
            return Err(fail("parameters must be a JSON Schema object".to_string()));
        }
        Ok(Descriptor {
            name: raw.name,
            version: raw.version,
            description: raw.description,
            parameters,
        })
    }
}
