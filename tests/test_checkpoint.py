"""utils/checkpoint.py: safe loading (official layout, malicious and broken files), atomic saving, model loading."""

import logging
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from utils import interrupt
from utils.checkpoint import auto_resume_helper, load_checkpoint, load_model_state, save_checkpoint
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "tiny_official_ckpt.pth"


class _Pwn:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalPwn(_Pwn):
    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


class _Tiny(torch.nn.Module):
    def __init__(self, hidden: int = 3):
        super().__init__()
        self.fc = torch.nn.Linear(2, hidden)
        self.bn = torch.nn.BatchNorm1d(hidden)


def _state(hidden: int = 3) -> dict:
    return {k: torch.randn_like(v.float()).to(v.dtype) for k, v in _Tiny(hidden).state_dict().items()}


# --- loading the official layout ---------------------------------------------------------------------


def test_golden_official_layout():
    ckpt = load_checkpoint(str(GOLDEN))
    assert list(ckpt) == ["model", "metrics", "epoch", "config", "max_accuracy", "max_miou"]
    assert len(ckpt["model"]) == 191
    assert all(torch.is_tensor(v) for v in ckpt["model"].values())
    assert ckpt["epoch"] == 29 and ckpt["metrics"] == {"max_accuracy": 0.0, "max_miou": 0.0}
    assert not {"optimizer", "lr_scheduler", "amp"} & set(ckpt)
    assert isinstance(ckpt["config"], DictConfig)
    model_cfg = OmegaConf.to_container(ckpt["config"].model, resolve=True)
    assert model_cfg["type"] == "MultiLabelContrastive" and model_cfg["multi_label"] == 3
    assert model_cfg["img_encoder"]["embed_dim"] == 96


def test_golden_accepts_path_objects_and_map_location():
    ckpt = load_checkpoint(GOLDEN, map_location=torch.device("cpu"))
    assert ckpt["model"]["logit_scale"].device.type == "cpu"


def test_numpy_scalar_metrics_are_accepted(tmp_path):
    path = tmp_path / "np.pth"
    torch.save({"model": {"w": torch.ones(1)}, "metrics": {"max_miou": np.float64(0.25)}, "epoch": np.int64(3)}, path)
    ckpt = load_checkpoint(str(path))
    assert float(ckpt["metrics"]["max_miou"]) == 0.25 and int(ckpt["epoch"]) == 3


# --- refusing untrusted and broken files ----------------------------------------------------------


@pytest.mark.parametrize("container", ["raw_pickle", "raw_pickle_protocol2", "torch_zip", "torch_legacy"])
@pytest.mark.parametrize("payload", [_Pwn, _EvalPwn])
def test_malicious_checkpoint_is_refused_without_side_effect(tmp_path, container, payload):
    marker = tmp_path / "pwned"
    obj = {"model": {"w": torch.zeros(2)}, "config": payload(marker)}
    path = tmp_path / "evil.pth"
    if container == "raw_pickle":
        path.write_bytes(pickle.dumps(obj))
    elif container == "raw_pickle_protocol2":
        path.write_bytes(pickle.dumps(obj, protocol=2))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=container == "torch_zip")
    with pytest.raises(UserError) as info:
        load_checkpoint(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "not a trusted checkpoint" in message
    assert ("system" in message) if payload is _Pwn else ("builtins.eval" in message)
    assert not marker.exists()


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found: .*nope.pth"):
        load_checkpoint(str(tmp_path / "nope.pth"))


def test_directory(tmp_path):
    with pytest.raises(UserError, match="folder without config.json: neither a checkpoint file nor a Hugging Face"):
        load_checkpoint(str(tmp_path))


@pytest.mark.parametrize(
    "content",
    [b"", bytes(range(256)) * 4, b"model: {}\nthis is a text file\n", b"\x80\x02" + bytes(range(255, 0, -1))],
    ids=["empty", "random", "text", "broken_pickle"],
)
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        load_checkpoint(str(path))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "not a PyTorch checkpoint" in message or "could not read" in message


def test_zip_that_is_not_a_checkpoint(tmp_path):
    import zipfile

    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(UserError, match="could not read .* as a checkpoint"):
        load_checkpoint(str(path))


def test_checkpoint_without_model_entry(tmp_path):
    path = tmp_path / "nomodel.pth"
    torch.save({"state_dict_typo": {"w": torch.zeros(1)}, "epoch": 3}, path)
    with pytest.raises(UserError, match=r"has no 'model' entry \(its keys: state_dict_typo, epoch\)"):
        load_checkpoint(str(path))


def test_non_dict_checkpoint(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(UserError, match="holds a list, not a checkpoint dict"):
        load_checkpoint(str(path))


def test_bare_state_dict_is_wrapped(tmp_path):
    path = tmp_path / "bare.pth"
    sd = _Tiny().state_dict()
    torch.save(sd, path)
    ckpt = load_checkpoint(str(path))
    assert list(ckpt) == ["model"] and list(ckpt["model"]) == list(sd)


# --- saving ---------------------------------------------------------------------------------------


def test_save_round_trip_is_weights_only_loadable(tmp_path):
    golden = load_checkpoint(str(GOLDEN))
    path = tmp_path / "out" / "checkpoint.pth"
    state = {**golden, "epoch": 30, "metrics": {"max_miou": np.float64(0.5)}, "steps": (1, [2, 3])}
    save_checkpoint(state, path)

    plain = torch.load(path, weights_only=True)
    assert isinstance(plain["config"], dict)
    assert plain["config"]["model"]["multi_label"] == 3  # interpolation resolved
    assert plain["metrics"] == {"max_miou": 0.5} and type(plain["metrics"]["max_miou"]) is float
    assert plain["steps"] == (1, [2, 3]) and plain["epoch"] == 30
    assert list(plain["model"]) == list(golden["model"])
    assert hasattr(plain["model"], "_metadata")
    for k, v in golden["model"].items():
        assert plain["model"][k].is_contiguous() and torch.equal(plain["model"][k], v)
    assert not golden["model"]["text_encoder.token_embedding.weight"].is_contiguous()  # overlapping view in
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pth"]  # no temp file left
    assert load_checkpoint(str(path))["config"]["model"]["type"] == "MultiLabelContrastive"


def test_save_refuses_objects_weights_only_cannot_read(tmp_path):
    with pytest.raises(TypeError, match=r"state\['lr_scheduler'\]\['fn'\] is a function"):
        save_checkpoint({"model": {}, "lr_scheduler": {"fn": lambda x: x}}, tmp_path / "x.pth")
    assert list(tmp_path.iterdir()) == []


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 1}, path)
    good = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(UserError, match="could not save .*checkpoint.pth: disk full"):
        save_checkpoint({"model": {"w": torch.zeros(2)}, "epoch": 2}, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]
    assert load_checkpoint(str(path))["epoch"] == 1


# --- loading into a model -------------------------------------------------------------------------


def test_load_model_state_exact_fit():
    model, sd = _Tiny(), _state()
    load_model_state(model, sd)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k])


def test_load_model_state_golden_strided_tensor():
    sd = load_checkpoint(str(GOLDEN))["model"]
    key = "text_encoder.token_embedding.weight"
    emb = torch.nn.Module()
    emb.token_embedding = torch.nn.Embedding(*sd[key].shape)
    load_model_state(emb, {"token_embedding.weight": sd[key]})
    assert torch.equal(emb.token_embedding.weight, sd[key])


def test_load_model_state_strips_module_prefix():
    model, sd = _Tiny(), _state()
    load_model_state(model, {f"module.{k}": v for k, v in sd.items()})
    assert torch.equal(model.fc.weight, sd["fc.weight"])


def test_load_model_state_strict_report():
    model = _Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sd = _state(hidden=4)  # every fc/bn tensor has the wrong size
    del sd["fc.bias"]
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(UserError) as info:
        load_model_state(model, sd)
    lines = str(info.value).splitlines()
    assert lines[0] == "checkpoint does not fit the model: 1 missing, 1 unexpected, 5 shape mismatches"
    assert "  missing in checkpoint (1):" in lines and "    fc.bias" in lines
    assert "  unexpected in checkpoint (1):" in lines and "    extra.weight" in lines
    assert "    fc.weight: checkpoint [4, 2] vs model [3, 2]" in lines
    for k, v in model.state_dict().items():  # nothing was loaded
        assert torch.equal(v, before[k])


def test_load_model_state_report_is_capped():
    model = torch.nn.Sequential(*[torch.nn.Linear(1, 1) for _ in range(15)])
    with pytest.raises(UserError) as info:
        load_model_state(model, {"other": torch.zeros(1)})
    lines = str(info.value).splitlines()
    assert lines[0].startswith("checkpoint does not fit the model: 30 missing, 1 unexpected")
    assert "    ... and 20 more" in lines and len(lines) == 1 + 12 + 2


def test_load_model_state_non_strict_loads_what_fits(caplog):
    model = _Tiny()
    sd = _state()
    sd["fc.weight"] = torch.zeros(5, 2)  # shape mismatch: must not be loaded
    old_fc_weight = model.fc.weight.detach().clone()
    del sd["bn.bias"]
    sd["extra"] = torch.zeros(1)
    with caplog.at_level(logging.WARNING, logger="utils.checkpoint"):
        load_model_state(model, sd, strict=False)
    assert "checkpoint does not fit the model: 1 missing, 1 unexpected, 1 shape mismatches" in caplog.text
    assert "fc.weight: checkpoint [5, 2] vs model [3, 2]" in caplog.text
    assert torch.equal(model.fc.weight, old_fc_weight)
    assert torch.equal(model.fc.bias, sd["fc.bias"]) and torch.equal(model.bn.running_var, sd["bn.running_var"])


def test_torch_function_in_pickle_is_refused(tmp_path):
    class _HubPwn:
        def __reduce__(self):
            return (torch.hub.load, ("someone/repo", "model"))

    path = tmp_path / "hub.pth"
    torch.save({"model": {}, "x": _HubPwn()}, path)
    with pytest.raises(UserError, match="references torch.hub.load.*not a trusted checkpoint"):
        load_checkpoint(str(path))


# --- URLs (no network: the download is faked) -----------------------------------------------------


def test_url_is_downloaded_once_into_the_hub_cache(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, dst, *args, **kwargs):
        calls.append(url)
        Path(dst).write_bytes(GOLDEN.read_bytes())

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    url = "https://example.com/releases/group_vit_tiny-0123abcd.pth"
    for _ in range(2):
        assert len(load_checkpoint(url)["model"]) == 191
    assert calls == [url]
    assert (tmp_path / "hub" / "checkpoints" / "group_vit_tiny-0123abcd.pth").is_file()


def test_url_download_failure(tmp_path, monkeypatch):
    def failing_download(url, dst, *args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", failing_download)
    with pytest.raises(UserError, match="could not download checkpoint https://example.com/x.pth: network unreachable"):
        load_checkpoint("https://example.com/x.pth")


@pytest.fixture
def file_size_limit():
    """Set the process's file size limit (bytes) for the test: a write past it fails as a full disk does, with an
    OSError from the kernel (EFBIG; SIGXFSZ ignored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    yield lambda limit: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)


def test_a_refused_write_is_one_line_naming_the_last_complete_checkpoint(tmp_path, file_size_limit, monkeypatch):
    small, big = {"model": {"w": torch.zeros(10)}}, {"model": {"w": torch.zeros(200_000)}}
    save_checkpoint(small, tmp_path / "checkpoint.pth")
    before = (tmp_path / "checkpoint.pth").read_bytes()
    monkeypatch.setattr(interrupt.progress, "resume", "")  # restored after the test
    interrupt.progress.checkpoint_saved(tmp_path / "checkpoint.pth", auto_resume=True)
    file_size_limit(100_000)
    with pytest.raises(UserError) as error:
        save_checkpoint(big, tmp_path / "checkpoint.pth")
    message = str(error.value)
    assert message.startswith(f"could not save {tmp_path / 'checkpoint.pth'}: File too large; the files already in")
    assert f"the last complete checkpoint is {tmp_path / 'checkpoint.pth'}" in message and "\n" not in message
    assert (tmp_path / "checkpoint.pth").read_bytes() == before and os.listdir(tmp_path) == ["checkpoint.pth"]


def test_a_truncated_checkpoint_is_named_and_auto_resume_takes_the_last_complete_one(tmp_path, caplog):
    """checkpoint.pth cut short (an interrupted copy): loading it says so and names ckpt_epoch_0.pth beside it,
    which auto-resume takes instead, with a warning; with nothing complete beside it, auto-resume refuses."""
    save_checkpoint({"model": {"w": torch.zeros(10)}, "epoch": 0}, tmp_path / "ckpt_epoch_0.pth")
    whole = (tmp_path / "ckpt_epoch_0.pth").read_bytes()
    (tmp_path / "checkpoint.pth").write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(UserError, match=r"checkpoint.pth is truncated: a torch.save archive without its end .*"
                                        r"the newest complete checkpoint beside it is .*ckpt_epoch_0.pth"):
        load_checkpoint(tmp_path / "checkpoint.pth")
    with caplog.at_level(logging.WARNING):
        assert auto_resume_helper(tmp_path) == str(tmp_path / "ckpt_epoch_0.pth")
    assert "checkpoint.pth is truncated (an interrupted copy?): resuming from" in caplog.text
    (tmp_path / "ckpt_epoch_0.pth").unlink()
    with pytest.raises(UserError, match="no complete checkpoint is beside it"):
        auto_resume_helper(tmp_path)


def test_a_missing_run_folder_is_a_missing_path_not_a_hub_id(tmp_path, monkeypatch):
    """--resume output/run1 beside an output/ folder: no such checkpoint, at once (it was sent to the Hub)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "output").mkdir()
    with pytest.raises(UserError, match=r"^checkpoint not found: output/run1$"):
        load_checkpoint("output/run1")


def test_an_unreachable_hub_fails_in_one_line_without_retries(tmp_path):
    """A Hub id with no cached copy and the Hub unreachable (a closed local port as HF_ENDPOINT): one line from
    one request, not huggingface_hub's five retries and their warnings."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path / "hf")}
    code = ("from utils.cli import run_cli; from utils.checkpoint import load_checkpoint; "
            "run_cli(lambda: load_checkpoint('nobody-here/groupvit-tiny'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: checkpoint 'nobody-here/groupvit-tiny' is no local file or folder, and "
                                    "loading it from the Hugging Face Hub failed (ConnectError")
