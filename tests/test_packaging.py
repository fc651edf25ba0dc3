"""The wheel: built from a copy of the sources, installed into a fresh virtual environment.

The test suite itself runs against the editable install; this test checks what users of a
wheel get: every subpackage (whose sources live outside ``lowbit/``, see ``package-dir`` in
``pyproject.toml``), the cocotb testbench shipped as package data, and a working ``lowbit``
console script, all used from a directory outside the repository.

Dependencies are not reinstalled: the new environment sees the running interpreter's
site-packages (``--system-site-packages`` plus a path file when the suite itself runs in a
virtual environment), and the wheel is installed with ``--no-deps``.
"""

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _run(cmd, *, cwd, env=None, timeout=300):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                    f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
    return proc


def _copy_sources(dest: Path) -> None:
    """The files a build needs, so the build never writes into the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "sim_build")
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dest / name)
    dirs = set(PYPROJECT["tool"]["setuptools"].get("package-dir", {}).values()) or {"lowbit"}
    for d in sorted(dirs):
        top = Path(d).parts[0]
        if not (dest / top).exists():
            shutil.copytree(ROOT / top, dest / top, ignore=ignore)


def _build_wheel(src: Path, out: Path) -> Path:
    # No build isolation: the test must not download anything. The installed setuptools
    # (>= 70.1, a lowbit dependency) builds wheels without the separate `wheel` package.
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
          "-w", str(out), str(src)], cwd=src)
    wheels = sorted(out.glob("lowbit-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _site_dirs() -> list[str]:
    dirs = list(site.getsitepackages())
    for key in ("purelib", "platlib"):
        dirs.append(sysconfig.get_paths()[key])
    seen, out = set(), []
    for d in dirs:
        if d not in seen and Path(d).is_dir():
            seen.add(d)
            out.append(d)
    return out


def _new_env(path: Path) -> Path:
    venv.EnvBuilder(system_site_packages=True, with_pip=True, symlinks=os.name != "nt") \
        .create(path)
    py = path / ("Scripts" if os.name == "nt" else "bin") / "python"
    purelib = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=path).stdout.strip()
    # Plain path lines only: the running environment's own .pth hooks (the editable install
    # of lowbit among them) are not executed, so `import lowbit` can only find the wheel.
    Path(purelib, "zz_lowbit_test_deps.pth").write_text("\n".join(_site_dirs()) + "\n")
    return py


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("packaging")
    src, dist = tmp / "src", tmp / "dist"
    src.mkdir()
    _copy_sources(src)
    wheel = _build_wheel(src, dist)
    py = _new_env(tmp / "venv")
    _run([py, "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-installed",
          "--no-index", wheel], cwd=tmp)
    work = tmp / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{py.parent}{os.pathsep}{env.get('PATH', '')}"
    return dict(wheel=wheel, py=py, bin=py.parent, work=work, env=env, venv=tmp / "venv")


def test_wheel_contents(installed):
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for module in ("lowbit/__init__.py", "lowbit/cli.py", "lowbit/isa.py",
                   "lowbit/hw/__init__.py", "lowbit/hw/top.py", "lowbit/compiler/__init__.py",
                   "lowbit/sim/__init__.py", "lowbit/sim/cycle.py",
                   "lowbit/sim/cocotb/lowbit_tb.py", "lowbit/boards/__init__.py",
                   "lowbit/sweep/__init__.py"):
        assert module in names, module
    assert not any(n.startswith(("tests/", "hw/", "sim/", "compiler/")) for n in names)
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(installed["wheel"]).read(entry).decode()
    assert "lowbit = lowbit.cli:main" in text


def test_imports_come_from_the_wheel(installed):
    code = ("import importlib.util, lowbit, lowbit.hw, lowbit.compiler, lowbit.sim, "
            "lowbit.boards, lowbit.sweep, lowbit.hw.top, lowbit.sim.cycle\n"
            "mods = [lowbit, lowbit.hw, lowbit.compiler, lowbit.sim, lowbit.boards, "
            "lowbit.sweep]\n"
            "print('\\n'.join(m.__file__ for m in mods))\n"
            "print(importlib.util.find_spec('lowbit.sim.cocotb.lowbit_tb').origin)\n")
    out = _run([installed["py"], "-c", code], cwd=installed["work"], env=installed["env"])
    venv_dir = installed["venv"].resolve()
    for line in out.stdout.split():
        assert Path(line).resolve().is_relative_to(venv_dir), line


def test_console_script_help(installed):
    exe = installed["bin"] / "lowbit"
    out = _run([exe, "--help"], cwd=installed["work"], env=installed["env"])
    for command in ("demo", "verilog", "isa-doc", "compile-gemm", "run", "cosim", "config"):
        assert command in out.stdout


def test_console_script_writes_verilog(installed):
    exe = installed["bin"] / "lowbit"
    _run([exe, "verilog", "--config", "tiny", "-o", "x.v"], cwd=installed["work"],
         env=installed["env"])
    text = (installed["work"] / "x.v").read_text()
    assert text.startswith("// Generated by lowbit from config 4x4-w4a8-b32-")
    assert "module lowbit_top" in text
