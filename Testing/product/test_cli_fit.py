"""``umedprotect fit`` end to end on a tiny nnU-Net dataset, and use of the fitted protector."""

from __future__ import annotations

import json

from umedprotect.cli import main
from umedprotect.protector import load_protector

TINY = [
    "--steps",
    "3",
    "--min-steps",
    "1",
    "--batch-size",
    "2",
    "--patch-size",
    "32",
    "--base-channels",
    "4",
    "--device",
    "cpu",
]


def test_fit_writes_a_loadable_protector_and_its_history(nnunet_dataset, tmp_path, capsys):
    out, history = tmp_path / "mine.safetensors", tmp_path / "history.json"
    assert main(["fit", str(nnunet_dataset), "-o", str(out), "--history", str(history), "--epsilon", "6", *TINY]) == 0
    protector = load_protector(out)
    assert protector.config.epsilon == 6 and protector.config.base_channels == 4
    assert protector.config.training["datasets"] == [str(nnunet_dataset)]
    assert len(protector.config.training["cases"]) == 3
    assert [r["step"] for r in json.loads(history.read_text())] == [1, 2, 3]
    captured = capsys.readouterr()
    assert "after 3 steps" in captured.out and "fitting" in captured.err  # the progress bar
    image = next((nnunet_dataset / "imagesTr").iterdir())
    label = nnunet_dataset / "labelsTr" / image.name.replace("_0000", "")
    assert (
        main(
            [
                "protect",
                str(image),
                str(label),
                "-o",
                str(tmp_path / "p.nii.gz"),
                "--protector",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )


def test_fit_without_progress_bar(nnunet_dataset, tmp_path, capsys):
    out = tmp_path / "quiet.safetensors"
    assert main(["fit", str(nnunet_dataset), "-o", str(out), "--no-progress", *TINY]) == 0
    captured = capsys.readouterr()
    assert "after 3 steps" in captured.out and "fitting" not in captured.err


def test_fit_refuses_an_existing_output_and_a_missing_dataset(nnunet_dataset, tmp_path, capsys):
    out = tmp_path / "exists.safetensors"
    out.write_bytes(b"keep me")
    assert main(["fit", str(nnunet_dataset), "-o", str(out), *TINY]) == 2
    assert out.read_bytes() == b"keep me"
    assert main(["fit", str(tmp_path / "nowhere"), "-o", str(tmp_path / "new.safetensors"), *TINY]) == 2
    assert not (tmp_path / "new.safetensors").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("umedprotect: error:") for line in err)


def test_fit_takes_the_protector_options_and_refuses_them_out_of_range(nnunet_dataset, tmp_path, capsys):
    out = tmp_path / "blobs.safetensors"
    options = ["--texture-floor", "0.5", "--codes", "blobs", "--code-period", "16", "--freeze-codes"]
    assert main(["fit", str(nnunet_dataset), "-o", str(out), *options, *TINY]) == 0
    config = load_protector(out).config
    assert (config.texture_floor, config.code_init, config.code_period) == (0.5, "blobs", 16)
    assert config.training["settings"]["freeze_codes"] is True
    capsys.readouterr()
    for option, value in (("--texture-floor", "1.5"), ("--epsilon", "0"), ("--code-period", "0")):
        bad = tmp_path / f"bad{option}.safetensors"
        assert main(["fit", str(nnunet_dataset), "-o", str(bad), option, value, *TINY]) == 2
        assert not bad.exists()
        message = capsys.readouterr().err.strip()
        assert message.startswith(f"umedprotect: error: {option} {float(value):g} is out of range")


def test_fit_refuses_a_schedule_it_cannot_run(nnunet_dataset, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    for option, value in (
        ("--steps", "-1"),
        ("--batch-size", "0"),
        ("--patch-size", "8"),
        ("--stop-dice", "2"),
        ("--offset-weight", "-1"),
    ):
        assert main(["fit", str(nnunet_dataset), "-o", str(bad), *TINY, option, value]) == 2, option
        assert not bad.exists()
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("umedprotect: error: --") and option in err[0]


def test_fit_without_steps_writes_the_codes_alone(nnunet_dataset, tmp_path, capsys):
    import numpy as np

    from umedprotect.array_protection import protect_array
    from umedprotect.phantoms import phantom_slice
    from umedprotect.regions import edge_depth

    out = tmp_path / "rings.safetensors"
    options = ["--codes", "rings", "--code-period", "6", "--texture-floor", "1", "--band-radius", "0", "--steps", "0"]
    assert main(["fit", str(nnunet_dataset), "-o", str(out), *TINY[2:], *options]) == 0
    assert "without fitting" in capsys.readouterr().out
    protector = load_protector(out)
    assert protector.config.training["steps_run"] == 0 and len(protector.config.training["cases"]) == 3
    image, labels = phantom_slice((64, 64), n_lesions=1, rng=0)
    labels = (labels > 0).astype(np.uint8)
    result = protect_array(image.astype(np.float64), labels, protector, epsilon=6)
    depth = edge_depth(labels)
    expected = np.tanh(protector.codes[1].detach().numpy()[(depth.round().astype(int)) % 6]) * result.budget
    exact = (labels > 0) & (depth == depth.round())  # integer depths: no interpolation
    exact &= (image + expected <= image.max()) & (image + expected >= image.min())  # not clipped to the image's range
    assert exact.sum() > 20
    np.testing.assert_allclose(result.change[exact], expected[exact], rtol=1e-5, atol=1e-6)  # the rings, nothing else
