//! Loads sod loss plugins (shared libraries with the C ABI of `sod-loss-abi`) and runs them.
//!
//! ```no_run
//! # use std::path::Path;
//! # fn demo(batch: &sod_loss::Batch) -> Result<(), sod_loss::LossError> {
//! let plugin = sod_loss::LossPlugin::load("sod", Path::new("target/debug"))?;
//! let mut loss = plugin.configure(&[("delta".into(), "0.3".into())])?;
//! loss.check_run(&sod_loss::RunShape { has_teacher: true, data: sod_loss::DataSource::OnPolicy, group_size: 8 })?;
//! let output = loss.compute(batch)?;
//! # Ok(()) }
//! ```
//!
//! The host never trusts a plugin: it checks the ABI version before reading the rest of the
//! table, rejects null functions, validates batches before the call and outputs after it, and
//! reports plugin errors (including panics a plugin caught at its boundary) as [`LossError`]s.

#![warn(missing_docs)]

mod batch_file;
mod configured;
mod error;

use std::ffi::{CStr, CString, c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sod_loss_abi::{
    PluginErrorKind, SOD_LOSS_ABI_VERSION, SOD_LOSS_ABI_VERSION_MIN, SOD_LOSS_ENTRY_SYMBOL,
    SOD_LOSS_OK, SodLossComputeFn, SodLossCreateFn, SodLossDestroyFn, SodLossEntryFn,
    SodLossErrorBuf, SodLossOutput, SodLossPlugin, SodLossRequirements, SodLossRequirementsFn,
    SodLossSetting,
};

pub use batch_file::{read_batch_file, run_batch_file};
pub use configured::{ConfiguredLoss, LossOutput, RunShape};
pub use error::LossError;
pub use sod_loss_abi::{
    Batch, BatchError, DataSource, DivergenceKind, DivergenceSpec, Requirements,
};

/// Size of the buffer lent to a plugin for an error message.
const ERROR_CAPACITY: usize = 4096;

/// The validated functions of a plugin table.
#[derive(Clone, Copy)]
struct Functions {
    create: SodLossCreateFn,
    requirements: SodLossRequirementsFn,
    compute: SodLossComputeFn,
    destroy: SodLossDestroyFn,
}

/// A loaded loss plugin, ready to be configured.
pub struct LossPlugin {
    // Keeps the code behind `functions` mapped; `None` for a statically linked table.
    library: Option<Arc<libloading::Library>>,
    functions: Functions,
    origin: String,
    name: String,
    description: String,
    abi_version: u32,
}

// SAFETY: the ABI requires `create` to be callable from any thread and the table to be immutable.
unsafe impl Send for LossPlugin {}
// SAFETY: as above; `LossPlugin` only reads its fields.
unsafe impl Sync for LossPlugin {}

impl std::fmt::Debug for LossPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LossPlugin")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// The file name of the plugin called `name`: `libsod_loss_<name>.so` on Linux.
pub fn plugin_file_name(name: &str) -> String {
    format!(
        "{}sod_loss_{}{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

/// The directory of the running executable: where cargo puts the plugins next to `sod`.
pub fn default_plugin_dir() -> Result<PathBuf, LossError> {
    let exe = std::env::current_exe().map_err(LossError::ExecutableDir)?;
    exe.parent().map(Path::to_path_buf).ok_or_else(|| {
        LossError::ExecutableDir(std::io::Error::other(format!(
            "{} has no parent",
            exe.display()
        )))
    })
}

/// Where `name_or_path` points: a path (anything with a path separator or a shared-library
/// suffix) as given, otherwise `plugin_dir/libsod_loss_<name>.so`.
pub fn resolve_plugin_path(name_or_path: &str, plugin_dir: &Path) -> Result<PathBuf, LossError> {
    let is_path = name_or_path.contains(std::path::MAIN_SEPARATOR)
        || name_or_path.contains('/')
        || [".so", ".dylib", ".dll"]
            .iter()
            .any(|s| name_or_path.ends_with(s));
    let path = if is_path {
        PathBuf::from(name_or_path)
    } else {
        let valid = !name_or_path.is_empty()
            && name_or_path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(LossError::InvalidName {
                name: name_or_path.to_string(),
            });
        }
        plugin_dir.join(plugin_file_name(name_or_path))
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(LossError::NotFound {
            name: name_or_path.to_string(),
            path,
            available: if is_path {
                Vec::new()
            } else {
                available_plugins(plugin_dir)
            },
        })
    }
}

/// The names of the plugins in a directory, sorted.
pub fn available_plugins(plugin_dir: &Path) -> Vec<String> {
    let prefix = format!("{}sod_loss_", std::env::consts::DLL_PREFIX);
    let mut names: Vec<String> = std::fs::read_dir(plugin_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().into_string().ok()?;
            let name = file
                .strip_prefix(&prefix)?
                .strip_suffix(std::env::consts::DLL_SUFFIX)?;
            Some(name.to_string())
        })
        .collect();
    names.sort();
    names
}

impl LossPlugin {
    /// Loads a plugin by name from `plugin_dir` (`libsod_loss_<name>.so`) or by path.
    /// A plugin loaded by name must call itself that name.
    pub fn load(name_or_path: &str, plugin_dir: &Path) -> Result<Self, LossError> {
        let path = resolve_plugin_path(name_or_path, plugin_dir)?;
        let plugin = Self::load_path(&path)?;
        if path.file_name() == Some(plugin_file_name(name_or_path).as_ref())
            && plugin.name.replace('-', "_") != name_or_path.replace('-', "_")
        {
            return Err(LossError::InvalidTable {
                origin: plugin.origin.clone(),
                problem: format!(
                    "the file is named for plugin '{name_or_path}' but the plugin calls itself '{}'",
                    plugin.name
                ),
            });
        }
        Ok(plugin)
    }

    /// Loads the plugin in the shared library at `path`.
    pub fn load_path(path: &Path) -> Result<Self, LossError> {
        // SAFETY: loading a library runs its initialisers; loss plugins are trusted code chosen
        // by the person running the trainer, as any native library is.
        let library =
            unsafe { libloading::Library::new(path) }.map_err(|source| LossError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        // SAFETY: the ABI fixes the symbol's type.
        let entry: SodLossEntryFn = unsafe { library.get::<SodLossEntryFn>(SOD_LOSS_ENTRY_SYMBOL) }
            .map(|symbol| *symbol)
            .map_err(|source| LossError::MissingSymbol {
                path: path.to_path_buf(),
                symbol: SOD_LOSS_ENTRY_SYMBOL,
                source,
            })?;
        // SAFETY: a plugin's entry function takes nothing and returns its static table.
        let table = unsafe { entry() };
        let origin = path.display().to_string();
        // SAFETY: the table lives as long as the library, which the plugin keeps.
        unsafe { Self::from_table(table, origin, Some(Arc::new(library))) }
    }

    /// Uses a table linked into this program (a plugin crate used as a library, or a test double).
    /// `origin` names it in messages.
    pub fn from_static(table: &'static SodLossPlugin, origin: &str) -> Result<Self, LossError> {
        // SAFETY: a `'static` reference is valid forever.
        unsafe { Self::from_table(table, origin.to_string(), None) }
    }

    /// # Safety
    /// `table` is null or points to a table valid while `library` (or the program) is loaded.
    unsafe fn from_table(
        table: *const SodLossPlugin,
        origin: String,
        library: Option<Arc<libloading::Library>>,
    ) -> Result<Self, LossError> {
        let invalid = |problem: String| LossError::InvalidTable {
            origin: origin.clone(),
            problem,
        };
        if table.is_null() {
            return Err(invalid("the entry function returned a null table".into()));
        }
        // The version is the first field, the only one read before it is checked: a table of
        // another version may have another layout.
        // SAFETY: non-null, and every ABI version starts with a u32 version.
        let found = unsafe { table.cast::<u32>().read() };
        if !(SOD_LOSS_ABI_VERSION_MIN..=SOD_LOSS_ABI_VERSION).contains(&found) {
            return Err(LossError::AbiVersion {
                origin,
                found,
                expected: SOD_LOSS_ABI_VERSION,
            });
        }
        // SAFETY: a table of a known version (every version has version 1's table layout), valid as the caller
        // guarantees.
        let table = unsafe { &*table };
        // SAFETY: the ABI requires NUL-terminated strings that live as long as the table.
        let name = unsafe { table_string(table.name) }
            .ok_or_else(|| invalid("`name` is null or not UTF-8".into()))?;
        if name.is_empty() {
            return Err(invalid("`name` is empty".into()));
        }
        // SAFETY: as above.
        let description = unsafe { table_string(table.description) }.unwrap_or_default();
        let missing = |function: &str| invalid(format!("function `{function}` is null"));
        let functions = Functions {
            create: table.create.ok_or_else(|| missing("create"))?,
            requirements: table.requirements.ok_or_else(|| missing("requirements"))?,
            compute: table.compute.ok_or_else(|| missing("compute"))?,
            destroy: table.destroy.ok_or_else(|| missing("destroy"))?,
        };
        Ok(LossPlugin {
            library,
            functions,
            origin,
            name,
            description,
            abi_version: found,
        })
    }

    /// The ABI version of the plugin's table (1 or 2).
    pub fn abi_version(&self) -> u32 {
        self.abi_version
    }

    /// The plugin's name, e.g. `sod`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's one-line description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Where the plugin came from (its file path), for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The requirements of the plugin's default configuration.
    pub fn requirements(&self) -> Result<Requirements, LossError> {
        Ok(self.configure(&[])?.requirements())
    }

    /// Configures an instance from key/value settings; the plugin rejects unknown keys and bad
    /// values.
    pub fn configure(&self, settings: &[(String, String)]) -> Result<ConfiguredLoss, LossError> {
        let mut owned = Vec::with_capacity(settings.len());
        for (key, value) in settings {
            let to_c = |text: &str| {
                CString::new(text)
                    .map_err(|_| LossError::Setting(format!("{key}={value} (contains a NUL byte)")))
            };
            owned.push((to_c(key)?, to_c(value)?));
        }
        let raw: Vec<SodLossSetting> = owned
            .iter()
            .map(|(key, value)| SodLossSetting {
                key: key.as_ptr(),
                value: value.as_ptr(),
            })
            .collect();
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut message = ErrorMessage::new();
        // SAFETY: the settings and the out pointer are valid for the call.
        let status = unsafe {
            (self.functions.create)(raw.as_ptr(), raw.len(), &mut instance, message.as_ffi())
        };
        self.check_status("configure", status, &message)?;
        if instance.is_null() {
            return Err(LossError::Output {
                plugin: self.name.clone(),
                origin: self.origin.clone(),
                problem: "create returned success but no instance".into(),
            });
        }
        let mut configured = ConfiguredLoss {
            library: self.library.clone(),
            functions: self.functions,
            instance,
            origin: self.origin.clone(),
            name: self.name.clone(),
            requirements: Requirements {
                needs_teacher: false,
                data: DataSource::OnPolicy,
                min_group_size: 1,
                divergence: None,
            },
        };
        configured.requirements = configured.query_requirements()?;
        Ok(configured)
    }

    fn check_status(
        &self,
        operation: &'static str,
        status: i32,
        message: &ErrorMessage,
    ) -> Result<(), LossError> {
        plugin_status(&self.name, &self.origin, operation, status, message)
    }
}

fn plugin_status(
    plugin: &str,
    origin: &str,
    operation: &'static str,
    status: i32,
    message: &ErrorMessage,
) -> Result<(), LossError> {
    if status == SOD_LOSS_OK {
        return Ok(());
    }
    let mut text = message.text();
    if text.is_empty() {
        text = "(no message)".into();
    }
    Err(LossError::Plugin {
        plugin: plugin.to_string(),
        origin: origin.to_string(),
        operation,
        kind: PluginErrorKind::from_status(status),
        status,
        message: text,
    })
}

/// # Safety
/// `ptr` is null or a NUL-terminated string valid for `'static` of the library.
unsafe fn table_string(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: as the caller guarantees.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .ok()
        .map(str::to_string)
}

/// The error buffer lent to a plugin.
struct ErrorMessage {
    bytes: Vec<u8>,
    raw: SodLossErrorBuf,
}

impl ErrorMessage {
    fn new() -> Self {
        let mut bytes = vec![0u8; ERROR_CAPACITY];
        let raw = SodLossErrorBuf {
            message: bytes.as_mut_ptr().cast::<c_char>(),
            capacity: bytes.len(),
        };
        ErrorMessage { bytes, raw }
    }

    fn as_ffi(&mut self) -> *mut SodLossErrorBuf {
        &mut self.raw
    }

    fn text(&self) -> String {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.bytes.len());
        String::from_utf8_lossy(&self.bytes[..end]).into_owned()
    }
}

/// Parses a `key=value` command-line setting.
pub fn parse_setting(text: &str) -> Result<(String, String), LossError> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(LossError::Setting(text.to_string())),
    }
}
