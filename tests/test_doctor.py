import json

from nbhelpers import doctor
from nbhelpers.cli import main


def _facts(**changes):
    facts = {"runtime": "local", "python": "3.11", "gpu": None, "gpu_hardware": False, "dtype": "float32",
             "ram": {"total_gb": 24.0, "available_gb": 20.0}, "disk": {"total_gb": 100.0, "free_gb": 80.0},
             "hf_token": False, "versions": {"ipywidgets": "7.7.1", "diffusers": "0.39.0"}, "auto_profile": "tiny",
             "workspace": {"path": "/content/outputs", "writable": True}, "drive_mounted": None}
    facts.update(changes)
    return facts


def test_healthy_machine_has_no_problems():
    assert doctor.find_problems(_facts()) == []


def test_problems_found_with_their_fixes():
    colab_w8 = doctor.find_problems(_facts(runtime="colab", versions={"ipywidgets": "8.1.5"}))
    assert any("ipywidgets 8.1.5" in message and "7.7.1" in fix for _, message, fix in colab_w8)
    cpu_torch = doctor.find_problems(_facts(gpu_hardware=True))
    assert any("torch cannot use it" in message for _, message, _ in cpu_torch)
    low_disk = doctor.find_problems(_facts(disk={"total_gb": 100.0, "free_gb": 3.0}))
    assert any("3.0 GiB of disk" in message for _, message, _ in low_disk)
    old = doctor.find_problems(_facts(versions={"diffusers": "0.30.0"}))
    assert any("diffusers 0.30.0 is outside" in message for _, message, _ in old)
    no_gpu_on_colab = doctor.find_problems(_facts(runtime="colab"))
    assert any("No GPU" in message for _, message, _ in no_gpu_on_colab)
    no_drive = doctor.find_problems(_facts(runtime="colab", drive_mounted=False))
    assert any("Drive is not mounted" in message for _, message, _ in no_drive)
    read_only = doctor.find_problems(_facts(workspace={"path": "/ro", "writable": False}))
    assert any(severity == "error" and "/ro is not writable" in message for severity, message, _ in read_only)
    busy_gpu = doctor.find_problems(_facts(gpu={"name": "Tesla T4", "count": 1, "total_gb": 14.7, "free_gb": 0.5,
                                             "capability": "7.5", "bf16": False}))
    assert any("0.5 GiB of VRAM free" in message for _, message, _ in busy_gpu)


def test_doctor_table_and_json(capsys, local_runtime):
    local_runtime.setenv("HF_TOKEN", "hf_" + "SECRETdoNotPrint1234567890abcdefgh")  # split: no token-shaped literal
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    for label in ("runtime", "GPU", "workspace", "Drive", "RAM available / total", "disk free / total", "dtype to use", "torch",
                  "diffusers", "transformers", "Hugging Face token"):
        assert label in text
    assert "found (not shown)" in text
    assert main(["doctor", "--json"]) == 0
    raw = capsys.readouterr().out
    data = json.loads(raw)
    assert data["runtime"] == "local" and data["hf_token"] is True
    assert isinstance(data["problems"], list)
    assert "SECRETdoNotPrint" not in text + raw


def test_doctor_renders_as_html_table_in_notebooks():
    html = doctor.report()._repr_html_()
    assert html.startswith("<table>") and "<td><b>GPU</b></td>" in html


def test_workspace_status_creates_nothing(tmp_path):
    target = tmp_path / "not" / "yet"
    status = doctor.workspace_status(target)
    assert status == {"path": str(target.resolve()), "writable": True} and not (tmp_path / "not").exists()


def test_doctor_reports_the_workspace_notebooks_write_to(local_runtime, tmp_path):
    from nbhelpers import persist

    local_runtime.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    local_runtime.setattr(persist, "KAGGLE_WORKSPACE", tmp_path / "kaggle" / "working")
    assert doctor.workspace_status()["path"] == str((tmp_path / "kaggle" / "working" / "outputs").resolve())
    assert doctor.workspace_status()["path"] == str(persist.workspace())


def test_a_front_end_that_cannot_show_the_kernels_widgets_is_reported():
    lab4 = {"jupyterlab": "4.6.6", "jupyterlab_widgets": "3.0.17", "notebook": None, "widgetsnbextension": "4.0.16"}
    found = doctor.find_problems(_facts(frontends=lab4))  # the kernel has ipywidgets 7.7.1
    assert len(found) == 1 and "jupyterlab 4.6.6 renders only ipywidgets 8" in found[0][1]
    assert "pip install 'ipywidgets>=8,<9'" in found[0][2]
    matching = {"jupyterlab": "4.6.6", "jupyterlab_widgets": "3.0.17", "widgetsnbextension": "4.0.16"}
    assert doctor.find_problems(_facts(versions={"ipywidgets": "8.1.5"}, frontends=matching)) == []
    classic = {"notebook": "6.5.7", "widgetsnbextension": "3.6.10", "jupyterlab": None}
    assert doctor.find_problems(_facts(frontends=classic)) == []  # Colab's line in the classic notebook: fine
    lab3_w8 = doctor.find_problems(_facts(versions={"ipywidgets": "8.1.5"}, frontends={"jupyterlab_widgets": "1.1.7"}))
    assert "jupyterlab_widgets 1.1.7 renders ipywidgets 7 widgets" in lab3_w8[0][1]
    # Colab brings its own front end: whatever is pip-installed beside the kernel says nothing about it
    assert not any("front end" in p[1] for p in doctor.find_problems(_facts(runtime="colab", frontends=lab4)))
