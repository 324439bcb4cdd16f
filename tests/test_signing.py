"""Authenticity: with a trusted public key, only a model folder signed by its private key is loaded."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("model_signing")
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.cli import main
from pipeline.core.errors import ModelIntegrityError
from pipeline.model.integrity import CHECKSUMS_FILE, seal_folder
from pipeline.serve.loading import load_model


def _keypair(folder: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture
def signed(trained, tmp_path, capsys):
    folder = Path(shutil.copytree(trained[0], tmp_path / "models"))
    private, public = _keypair(tmp_path, "producer")
    assert main(["sign", str(folder), "--key", str(private)]) == 0
    assert (folder / "model.sig").exists()
    capsys.readouterr()
    return folder, public


def test_a_signed_folder_loads_with_the_trusted_key(signed, monkeypatch, capsys):
    folder, public = signed
    assert load_model(folder, trusted=public).decision is not None
    monkeypatch.setenv("KNEEPAIN_TRUSTED_KEY", str(public))
    assert main(["verify", str(folder)]) == 0
    assert "and the signature by" in capsys.readouterr().out


def test_scoring_says_which_model_folder_scored_and_whether_a_signature_vouched_for_it(signed, tmp_path, monkeypatch,
                                                                                    capsys):
    """Without ``--model`` the folder is the project's found from the current folder: the summary
    names it, so a data folder delivered with a ``models/`` of its own is not used unseen."""
    folder, public = signed
    cases = tmp_path / "cases.csv"
    pd.DataFrame([{"age": 40, "sex": "male"}]).to_csv(cases, index=False)
    monkeypatch.delenv("KNEEPAIN_TRUSTED_KEY", raising=False)
    assert main(["score", str(cases), "-o", str(tmp_path / "a.csv"), "--model", str(folder)]) == 0
    line = capsys.readouterr().err.splitlines()[0]
    assert line.endswith(f"-> {tmp_path / 'a.csv'}, model {folder} (checksums checked; no signature, as "
                         "KNEEPAIN_TRUSTED_KEY is not set)"), line
    monkeypatch.setenv("KNEEPAIN_TRUSTED_KEY", str(public))
    assert main(["score", str(cases), "-o", str(tmp_path / "b.csv"), "--model", str(folder)]) == 0
    line = capsys.readouterr().err.splitlines()[0]
    assert line.endswith(f"model {folder} (signed by the trusted key {public})"), line


def test_a_consistent_rewrite_passes_the_checksums_but_not_the_signature(signed, tmp_path, monkeypatch, capsys):
    folder, public = signed
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["decision"]["triage"]["red_flags"] = []  # an attacker who also rewrites the checksums
    (folder / "manifest.json").write_text(json.dumps(manifest))
    seal_folder(folder, json.loads((folder / CHECKSUMS_FILE).read_text())["files"])
    load_model(folder)  # checksums alone cannot tell
    assert main(["verify", str(folder)]) == 0  # nor can verify without a key, which says so
    assert ("; it is signed (model.sig), but no trusted key was given, so the signature was not checked: give "
            "--trusted-key PUBLIC_KEY (or set KNEEPAIN_TRUSTED_KEY)") in capsys.readouterr().out
    with pytest.raises(ModelIntegrityError, match=r"changed since signing: checksums.json, manifest.json"):
        load_model(folder, trusted=public)
    monkeypatch.setenv("KNEEPAIN_TRUSTED_KEY", str(public))
    cases = tmp_path / "cases.csv"
    pd.DataFrame([{"age": 71, "sex": "female"}]).to_csv(cases, index=False)
    assert main(["score", str(cases), "-o", str(tmp_path / "out.csv"), "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not verified by the trusted key" in err and not (tmp_path / "out.csv").exists()


def test_an_unsigned_or_foreign_folder_is_refused_when_a_key_is_trusted(signed, trained, tmp_path):
    folder, public = signed
    with pytest.raises(ModelIntegrityError, match="model.sig is missing"):
        load_model(trained[0], trusted=public)
    _, other = _keypair(tmp_path, "someone-else")
    with pytest.raises(ModelIntegrityError, match="Key mismatch"):
        load_model(folder, trusted=other)
    (folder / "notes.txt").write_text("added later")
    with pytest.raises(ModelIntegrityError, match="added since signing: notes.txt"):
        load_model(folder, trusted=public)


def test_a_folder_changed_while_its_signature_is_checked_is_loaded_as_it_was_signed(signed, monkeypatch):
    """The signature is checked on a private copy of the folder and the model loaded from that
    copy: a folder rewritten (and its checksums resealed) just after the check, as a switched
    folder link or a replaced file would do, does not get its red flags served as self-care."""
    import pipeline.serve.loading as loading

    folder, public = signed
    checked = loading.verify_signature

    def check_then_rewrite(path, key):
        checked(path, key)
        manifest = json.loads((folder / "manifest.json").read_text())
        for flag in manifest["decision"]["triage"]["red_flags"]:
            flag["level"] = "self_care"
        (folder / "manifest.json").write_text(json.dumps(manifest))
        seal_folder(folder, json.loads((folder / CHECKSUMS_FILE).read_text())["files"])

    monkeypatch.setattr(loading, "verify_signature", check_then_rewrite)
    loaded = load_model(folder, trusted=public)
    assert {f["level"] for f in loaded.manifest["decision"]["triage"]["red_flags"]} != {"self_care"}
    assert loaded.source == str(folder)
    monkeypatch.setattr(loading, "verify_signature", checked)
    with pytest.raises(ModelIntegrityError, match=rf"{folder} is not verified .*changed since signing"):
        load_model(folder, trusted=public)  # the rewrite itself, loaded next, is refused, named by the folder


def test_a_pipe_in_a_model_folder_is_refused_not_waited_on(signed, trained, tmp_path):
    """A FIFO where a file should be would block the load for good (reading it waits for a
    writer): refused at once, in a signed folder and among the checksummed files of an unsigned one."""
    import os

    folder, public = signed
    os.mkfifo(folder / "notes")
    with pytest.raises(ModelIntegrityError, match=r"notes is a pipe, not a regular file"):
        load_model(folder, trusted=public)
    unsigned = Path(shutil.copytree(trained[0], tmp_path / "unsigned"))
    (unsigned / "knowledge_base.yaml").unlink()
    os.mkfifo(unsigned / "knowledge_base.yaml")
    with pytest.raises(ModelIntegrityError, match=r"knowledge_base.yaml is a pipe, not a regular file"):
        load_model(unsigned)


def test_a_signed_folder_nested_past_the_recursion_limit_is_refused_by_name(signed):
    """Folders nested deeper than Python's recursion limit inside a signed folder: its private copy
    walked them by recursion and the load raised a RecursionError instead of refusing the folder."""
    import os
    import sys

    folder, public = signed
    depth = sys.getrecursionlimit() + 50  # a path of 2 characters a level stays under PATH_MAX
    for level in range(1, depth + 1):
        os.mkdir(folder / "/".join(["d"] * level))
    try:
        with pytest.raises(ModelIntegrityError, match=rf"{folder}/d(/d)+ is nested more than 16 folders deep; "
                                                      rf"refusing to load {folder}\."):
            load_model(folder, trusted=public)
    finally:  # removed from the deepest up: shutil.rmtree would recurse too
        for level in range(depth, 0, -1):
            os.rmdir(folder / "/".join(["d"] * level))


def test_an_empty_trusted_key_is_an_error_not_a_silent_no_key(signed, monkeypatch):
    """``KNEEPAIN_TRUSTED_KEY=$KEY`` with ``KEY`` unset asked for signed folders and got none checked."""
    folder, _ = signed
    monkeypatch.setenv("KNEEPAIN_TRUSTED_KEY", "")
    with pytest.raises(ModelIntegrityError, match=r"KNEEPAIN_TRUSTED_KEY is set but empty"):
        load_model(folder)


def test_a_folder_given_by_a_relative_path_signs_and_verifies_as_the_readme_shows(signed, tmp_path, monkeypatch,
                                                                                  capsys):
    """``kneepain sign models`` then ``kneepain verify models``, run in the folder above it."""
    folder, public = signed
    private, public = _keypair(tmp_path, "relative")
    monkeypatch.chdir(folder.parent)
    assert main(["sign", folder.name, "--key", str(private)]) == 0
    assert main(["sign", folder.name, "--key", str(private)]) == 0  # signing again replaces model.sig
    monkeypatch.setenv("KNEEPAIN_TRUSTED_KEY", str(public))
    assert main(["verify", folder.name]) == 0, capsys.readouterr().err
    assert load_model(folder.name, trusted=public).decision is not None


def test_an_encrypted_key_signs_with_its_password_and_a_trusted_key_does_not_stop_signing(trained, tmp_path,
                                                                                            monkeypatch, capsys):
    """`kneepain sign --password-env PW` with an encrypted key, in a shell that trusts a key
    already (as the README sets up), re-signs after a retrain; an unset variable is named."""
    folder = Path(shutil.copytree(trained[0], tmp_path / "models"))
    key = ec.generate_private_key(ec.SECP256R1())
    private = tmp_path / "enc.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.BestAvailableEncryption("s\u00e9cret".encode())))
    public = tmp_path / "enc.pub"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    monkeypatch.setenv("KNEEPAIN_TRUSTED_KEY", str(public))  # the folder is not signed yet
    monkeypatch.setenv("PW", "s\u00e9cret")
    assert main(["sign", str(folder), "--key", str(private), "--password-env", "PW"]) == 0, capsys.readouterr().err
    assert main(["verify", str(folder)]) == 0
    # a link to the folder (current -> models-v3) verifies and signs as the folder
    link = tmp_path / "current"
    link.symlink_to(folder)
    assert main(["verify", str(link)]) == 0, capsys.readouterr().err
    assert main(["sign", str(link), "--key", str(private), "--password-env", "PW"]) == 0
    capsys.readouterr()
    assert main(["sign", str(folder), "--key", str(private), "--password-env", "NO_SUCH_PW"]) == 2
    assert "--password-env NO_SUCH_PW: no such environment variable" in capsys.readouterr().err


def test_signing_refuses_a_key_that_is_not_elliptic_curve_and_a_folder_loading_would_refuse(trained, tmp_path, capsys):
    """An RSA key failed deep in the signing library ("unexpected AttributeError: ... no attribute
    'curve'"); a folder nested too deep was signed, then refused by every load."""
    import os

    from cryptography.hazmat.primitives.asymmetric import rsa

    folder = Path(shutil.copytree(trained[0], tmp_path / "models"))
    key = tmp_path / "rsa.pem"
    key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    assert main(["sign", str(folder), "--key", str(key)]) == 2
    err = capsys.readouterr().err
    assert "the key is RSA, not elliptic-curve (P-256, P-384 or P-521" in err and "unexpected" not in err, err
    assert not (folder / "model.sig").exists()
    os.makedirs(folder / "/".join(["d"] * 20))
    private, _ = _keypair(tmp_path, "producer")
    assert main(["sign", str(folder), "--key", str(private)]) == 2
    err = capsys.readouterr().err
    assert f"cannot sign {folder}, which loading would refuse: " in err and "nested more than 16 folders deep" in err
    assert not (folder / "model.sig").exists()
