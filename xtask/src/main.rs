//! Build orchestration for sod: `cargo xtask <command>`.
//!
//! - `setup`: installs what a fresh machine lacks (the wasm32-wasip2 Rust target; the Python tool's
//!   virtual environment is created by its own build script).
//! - `build-tools`: builds every tool component into `target/tools/` and test fixtures into
//!   `target/test-tools/`.
//! - `test`: setup, build-tools, then the whole test suite.
//! - `demo`: setup, build-tools, then `sod demo` (the main job).
//! - `build-cuda`: installs the pinned CUDA 13.0 toolkit from PyPI's NVIDIA wheels into `.cuda/` and builds `sod`
//!   and the loss plugins with `--features cuda` in the release profile, into `target/cuda/` (the CPU build and CI
//!   are untouched).
//! - `gpu-pack [--out FILE]`: build-tools, build-cuda, then one compressed bundle (under 64 MiB) for a GPU machine:
//!   the CUDA `sod`, the plugins, the calculator, `xtask/gpu/run.sh` and its inputs. See docs/gpu.md.
//!
//! Only the standard library: xtask must build in seconds on a fresh clone.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

/// Guest crates built for wasm32-wasip2: (cargo package, artifact name, destination subdirectory).
const GUESTS: &[(&str, &str, &str)] = &[
    ("sod-tool-calculator", "calculator", "tools"),
    ("sod-tool-judge", "judge", "tools"),
    ("word-count-tool", "word-count", "tools"),
    ("sod-test-tool-hostile", "hostile", "test-tools"),
];

const WASM_TARGET: &str = "wasm32-wasip2";
const GUEST_PROFILE: &str = "guest";

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str).unwrap_or("help");
    let rest = &args[args.len().min(1)..];
    let result = match command {
        "setup" => setup(),
        "build-tools" => setup().and_then(|()| build_tools()),
        "test" => setup()
            .and_then(|()| build_tools())
            .and_then(|()| test(rest)),
        "demo" => setup()
            .and_then(|()| build_tools())
            .and_then(|()| demo(rest)),
        "build-cuda" => build_cuda().map(|_| ()),
        "gpu-pack" => setup()
            .and_then(|()| build_tools())
            .and_then(|()| gpu_pack(rest)),
        "help" | "--help" | "-h" => {
            println!(
                "usage: cargo xtask <setup | build-tools | test [ARGS] | demo [ARGS] | build-cuda | gpu-pack [--out FILE]>"
            );
            Ok(())
        }
        other => Err(format!(
            "unknown xtask command {other:?}; try `cargo xtask help`"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    // xtask/ lives directly under the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root());
    command
}

fn run(command: &mut Command) -> Result {
    eprintln!("xtask: running {command:?}");
    let status = command
        .status()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed with {status}"))
    }
}

fn setup() -> Result {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup (needed for the {WASM_TARGET} target): {e}"))?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    if !installed.lines().any(|line| line.trim() == WASM_TARGET) {
        run(Command::new("rustup").args(["target", "add", WASM_TARGET]))?;
    }
    Ok(())
}

fn build_tools() -> Result {
    let started = Instant::now();
    let mut build = cargo();
    build.args([
        "build",
        "--quiet",
        "--target",
        WASM_TARGET,
        "--profile",
        GUEST_PROFILE,
    ]);
    for (package, _, _) in GUESTS {
        build.args(["-p", package]);
    }
    run(&mut build)?;
    let built = target_dir().join(WASM_TARGET).join(GUEST_PROFILE);
    for (package, name, subdir) in GUESTS {
        let source = built.join(format!("{}.wasm", package.replace('-', "_")));
        let dest_dir = target_dir().join(subdir);
        std::fs::create_dir_all(&dest_dir)
            .map_err(|e| format!("cannot create {}: {e}", dest_dir.display()))?;
        let dest = dest_dir.join(format!("{name}.wasm"));
        copy_if_changed(&source, &dest)?;
    }
    let python_build = workspace_root().join("tools/python/build.sh");
    if python_build.is_file() {
        run(Command::new("bash")
            .arg(&python_build)
            .arg(target_dir().join("tools/python.wasm")))?;
    }
    eprintln!(
        "xtask: tools ready in {} ({:.1}s)",
        target_dir().join("tools").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Copies only when the content differs, so the compile cache and file times stay put.
fn copy_if_changed(source: &Path, dest: &Path) -> Result {
    let new =
        std::fs::read(source).map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    if std::fs::read(dest).ok().as_deref() == Some(new.as_slice()) {
        return Ok(());
    }
    std::fs::write(dest, &new).map_err(|e| format!("cannot write {}: {e}", dest.display()))
}

fn test(extra: &[String]) -> Result {
    // The Python tool's guest-side logic, natively (fast, and precise about which helper broke).
    run(Command::new("python3").current_dir(workspace_root()).args([
        "-m",
        "unittest",
        "discover",
        "-s",
        "tools/python/tests",
    ]))?;
    // Build every native crate first: the tests load the plugin cdylibs and run the `sod` binary.
    run(cargo().args(["build", "--workspace"]))?;
    run(cargo().args(["test", "--workspace"]).args(extra))
}

fn demo(extra: &[String]) -> Result {
    run(cargo().args(["build", "--workspace"]))?;
    run(cargo()
        .args(["run", "--quiet", "-p", "sod", "--", "demo"])
        .args(extra))
}

/// The loss plugins, as cargo packages (each a cdylib named after its package).
const PLUGINS: &[&str] = &[
    "sod-loss-sod",
    "sod-loss-opd",
    "sod-loss-grpo",
    "sod-loss-sft",
];

/// Where `build-cuda` builds: its own target directory, so the CPU build's artifacts never change.
fn cuda_target_dir() -> PathBuf {
    target_dir().join("cuda")
}

/// Installs the CUDA toolkit (`xtask/cuda/toolkit.sh`) and builds `sod` and the plugins with the `cuda` feature.
/// Returns the release directory holding them.
fn build_cuda() -> Result<PathBuf> {
    let started = Instant::now();
    let root = workspace_root();
    let dest = root.join(".cuda");
    eprintln!("xtask: CUDA toolkit into {}", dest.display());
    let output = Command::new("bash")
        .arg(root.join("xtask/cuda/toolkit.sh"))
        .arg(&dest)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run xtask/cuda/toolkit.sh: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "xtask/cuda/toolkit.sh failed with {}",
            output.status
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let cuda_root = PathBuf::from(
        stdout
            .lines()
            .last()
            .ok_or("xtask/cuda/toolkit.sh printed no toolkit root")?
            .trim(),
    );
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![cuda_root.join("bin")];
    paths.extend(std::env::split_paths(&path));
    let mut build = cargo();
    build
        .env("CUDA_ROOT", &cuda_root)
        .env(
            "PATH",
            std::env::join_paths(paths).map_err(|e| e.to_string())?,
        )
        // The driver stub, for the link only (cudarc links the real libcuda.so.1 found at run time).
        .env("LIBRARY_PATH", dest.join("stubs"))
        // PTX for compute capability 8.0 unless told otherwise: the driver compiles it for newer GPUs (an H200 is 9.0).
        .env(
            "CUDA_COMPUTE_CAP",
            std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".to_string()),
        )
        .env("CARGO_TARGET_DIR", cuda_target_dir())
        .args(["build", "--release", "-p", "sod", "--features", "sod/cuda"]);
    for plugin in PLUGINS {
        build.args(["-p", plugin]);
    }
    run(&mut build)?;
    let release = cuda_target_dir().join("release");
    let binary = release.join("sod");
    let needed = Command::new("readelf")
        .arg("-d")
        .arg(&binary)
        .output()
        .map_err(|e| format!("cannot run readelf on {}: {e}", binary.display()))?;
    let needed = String::from_utf8_lossy(&needed.stdout);
    for lib in ["libcuda.so.1", "libcublas.so.13", "libcurand.so.10"] {
        if !needed.contains(&format!("[{lib}]")) {
            return Err(format!("{} does not link {lib}", binary.display()));
        }
    }
    eprintln!(
        "xtask: {} built with CUDA ({:.0}s); it links libcuda.so.1, libcublas.so.13 and libcurand.so.10",
        binary.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(release)
}

/// The largest bundle a GPU machine takes in one transfer.
const MAX_BUNDLE_BYTES: u64 = 64 << 20;

/// Builds with CUDA and packs `sod-gpu/` (bin/sod, plugins/, tools/, run.sh and its inputs) into one `.tar.gz`.
fn gpu_pack(args: &[String]) -> Result {
    let out = match args {
        [] => target_dir().join("gpu-pack/sod-gpu.tar.gz"),
        [flag, path] if flag == "--out" => PathBuf::from(path),
        _ => return Err("usage: cargo xtask gpu-pack [--out FILE]".to_string()),
    };
    let release = build_cuda()?;
    let root = workspace_root();
    let staging_parent = target_dir().join("gpu-pack");
    let staging = staging_parent.join("sod-gpu");
    let _ = std::fs::remove_dir_all(&staging);
    for dir in ["bin", "plugins", "tools"] {
        std::fs::create_dir_all(staging.join(dir))
            .map_err(|e| format!("cannot create {}: {e}", staging.join(dir).display()))?;
    }
    let mut files: Vec<(PathBuf, PathBuf)> = vec![
        (release.join("sod"), staging.join("bin/sod")),
        (
            target_dir().join("tools/calculator.wasm"),
            staging.join("tools/calculator.wasm"),
        ),
        (root.join("xtask/gpu/run.sh"), staging.join("run.sh")),
        (
            root.join("xtask/gpu/qwen3-0.6b.json"),
            staging.join("qwen3-0.6b.json"),
        ),
        (
            root.join("host/train/benches/pytorch_train_step.py"),
            staging.join("pytorch_train_step.py"),
        ),
        (
            root.join("host/train/benches/pytorch_generate.py"),
            staging.join("pytorch_generate.py"),
        ),
    ];
    for plugin in PLUGINS {
        let name = format!("lib{}.so", plugin.replace('-', "_"));
        files.push((release.join(&name), staging.join("plugins").join(&name)));
    }
    for (source, dest) in &files {
        std::fs::copy(source, dest).map_err(|e| {
            format!(
                "cannot copy {} to {}: {e}",
                source.display(),
                dest.display()
            )
        })?;
    }
    // Line tables are for debugging here, not there: a stripped binary keeps the bundle small.
    run(Command::new("strip").arg(staging.join("bin/sod")))?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    run(Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&staging_parent)
        .arg("sod-gpu"))?;
    let bytes = std::fs::metadata(&out)
        .map_err(|e| format!("cannot read {}: {e}", out.display()))?
        .len();
    if bytes > MAX_BUNDLE_BYTES {
        return Err(format!(
            "{} is {:.1} MiB, over the {} MiB a GPU machine takes",
            out.display(),
            bytes as f64 / f64::from(1 << 20),
            MAX_BUNDLE_BYTES >> 20
        ));
    }
    eprintln!(
        "xtask: {} ({:.1} MiB): on the GPU machine, `tar xzf {} && bash sod-gpu/run.sh OUTDIR`",
        out.display(),
        bytes as f64 / f64::from(1 << 20),
        out.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().to_string())
    );
    Ok(())
}
