"""The error convention shared by every CLI: one line, exit 2, nothing half-made (repvgg_deploy.cli.common,
repvgg_deploy.utils.io)."""
import pytest

from repvgg_deploy.cli.common import describe_os_error, run_main
from repvgg_deploy.errors import UserError
from repvgg_deploy.utils.io import atomic_write_text, check_out_dir, check_writable_dir


def test_an_os_error_no_check_caught_is_one_line_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "missing.txt"

    def main(argv):
        with open(missing) as f:  # a real FileNotFoundError, as a file that vanished after its checks gives
            return f.read()

    assert run_main(main, "repvgg-x", []) == 2
    assert capsys.readouterr().err == f"repvgg-x: error: {missing}: No such file or directory\n"
    e = OSError(18, "Invalid cross-device link", "a.tmp", None, "b.onnx")
    assert describe_os_error(e) == "a.tmp -> b.onnx: Invalid cross-device link"
    # a library's OSError with a message of several lines (no strerror): its first line only
    assert describe_os_error(OSError("libnvinfer.so.10: cannot open shared object file\n  at dlopen")) == \
        "libnvinfer.so.10: cannot open shared object file"


def test_an_output_path_that_is_a_folder_fails_before_any_work(tmp_path):
    folder = tmp_path / "engines"
    folder.mkdir()
    with pytest.raises(UserError, match="output is a folder, not a file"):
        check_writable_dir(folder)
    with pytest.raises(UserError, match="output is a folder, not a file"):
        atomic_write_text(folder, "x")
    assert folder.is_dir() and not list(folder.iterdir()) and [p.name for p in tmp_path.iterdir()] == ["engines"]


def test_check_out_dir(tmp_path):
    a_file = tmp_path / "README.md"
    a_file.write_text("x")
    assert check_out_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()  # checks only
    with pytest.raises(UserError, match=r"--out .*README.md is a file, not a folder"):
        check_out_dir(a_file)
    with pytest.raises(UserError, match=r"--out .*README.md/run: .*README.md is a file, not a folder"):
        check_out_dir(a_file / "run")
