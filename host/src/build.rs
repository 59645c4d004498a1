//! `wasmcorn build`: packages apps written in other languages as wasmcorn guest components. Today, Python WSGI
//! apps: a cached build toolchain (`toolchain`), the app's requirements (`requirements`), the generated module and
//! the SDK (`glue`), and componentize-py's run (`componentize`), in owner-only cache folders (`cache`). Each step
//! fails with one line naming what is wrong.

mod cache;
mod componentize;
mod glue;
mod requirements;
mod tool;
mod toolchain;

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::Path;

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::SFlag;

use crate::cli::PythonBuildArgs;
use crate::planted::{Folder, Unreachable, kind_called};

/// What `-o` naming a folder is told.
fn is_a_folder(args: &PythonBuildArgs) -> String {
    format!("-o {} is a folder: name the component file to write", args.output.display())
}

/// Builds the component `args.output` from the WSGI app `args.target`.
pub(crate) fn python(args: &PythonBuildArgs) -> anyhow::Result<()> {
    let target = glue::Target::parse(&args.target)?;
    for path in &args.warmup {
        if !path.starts_with('/') {
            bail!("--warmup takes a path starting with `/`, not {path:?}");
        }
    }
    // Said before the build rather than after it, before anything is installed: a build that could not write its
    // component would be minutes lost. The output's folder is held from here on and the component written through
    // it: a link swapped in on the way during the build is never followed.
    let (folder, name) = match Folder::holding(&args.output, "the output") {
        Ok(held) => held,
        Err(Unreachable::Io(err)) if err.kind() == ErrorKind::NotFound => {
            let folder = args.output.parent().unwrap_or(Path::new("."));
            bail!("-o {}: the folder {} does not exist", args.output.display(), folder.display());
        }
        Err(Unreachable::Io(err)) if err.raw_os_error() == Some(Errno::EISDIR as i32) => bail!(is_a_folder(args)),
        Err(unreachable) => return Err(unreachable.context(format!("-o {}", args.output.display()))),
    };
    if folder.open_file(name, OFlag::O_PATH | OFlag::O_DIRECTORY, 0).is_ok() {
        bail!(is_a_folder(args));
    }
    // A component replaces a file (or a link, never what it points to), and nothing else: `-o /dev/null` run by
    // root would have replaced the null device.
    if let Ok(Some(kind)) = folder.entry_kind(name)
        && !matches!(kind, SFlag::S_IFREG | SFlag::S_IFLNK)
    {
        bail!(
            "-o {} is {}: name the component file to write (it is left as it is)",
            args.output.display(),
            kind_called(kind)
        );
    }
    let requirements = match &args.requirements {
        Some(path) => Some(
            crate::regular_file::read(path)
                .with_context(|| format!("cannot read --requirements {}", path.display()))?,
        ),
        None => None,
    };
    let src = fs::canonicalize(&args.src).with_context(|| format!("--src {}", args.src.display()))?;
    if !src.is_dir() {
        bail!("--src {} is not a folder", args.src.display());
    }
    let cache_root = match &args.cache_dir {
        Some(dir) => dir.clone(),
        None => crate::config::default_cache_dir().context("cannot find a cache folder: set --cache-dir or $HOME")?,
    };
    let cache = cache::Cache::open(&cache_root)?;
    let toolchain = toolchain::Toolchain::ensure(&cache, &args.python)?;
    let site = match &requirements {
        Some(text) => Some(requirements::Site::ensure(&cache, &toolchain, text)?),
        None => None,
    };
    let work = cache.scratch("work")?;
    let result = (|| {
        let native = site.as_ref().map(|site| site.native_extensions.as_slice()).unwrap_or_default();
        let glue = glue::write(work.path(), &target, &args.warmup, native, args.defer_import)?;
        let mut paths = vec![work.path().to_path_buf(), src.clone()];
        paths.extend(site.as_ref().map(|site| site.path.clone()));
        componentize::run(&toolchain, &glue, &paths, componentize::Output { folder: &folder, name, path: &args.output })
    })();
    drop(work);
    result?;
    let native = site.as_ref().map(|site| site.native_extensions.as_slice()).unwrap_or_default();
    if !native.is_empty() {
        let list: Vec<String> = native.iter().map(|(module, dist)| format!("{module} (from {dist})")).collect();
        say(format_args!(
            "Left out native extension modules, which cannot run in WebAssembly (an import of one fails): {}",
            // File and distribution names are a package author's text: they stay on this line.
            crate::log::escape(&list.join(", "))
        ));
    }
    say(format_args!("Built {} from {}", display(&args.output), args.target));
    Ok(())
}

/// Writes a line of the build's progress to stderr. A stderr that cannot take it (closed, a full disk) loses it,
/// and the build goes on.
fn say(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
