"""The Key Vault overlay (infra/deploy/keyvault), offline: the app of
infra/deploy/app with its Spin variables from Azure Key Vault.

spin-operator v0.6.1 (api/v1alpha1/spinapp_types.go, internal/controller/
deployment.go) mounts the Secret named by `runtimeConfig.loadFromSecret`,
key `runtime-config.toml`, as the app's whole runtime config. The overlay
must therefore generate that Secret from its runtime-config.toml, point the
SpinApp at it, drop the variable references of the base (they name
spin.toml's variables, which the image pushed from spin-keyvault.toml does
not declare) and run that image. tests/keyvault_manifest.rs checks the
runtime config and the list of vault secrets against spin-keyvault.toml.
"""

import shutil
import subprocess

import yaml

import infra_lib

SECRET_KEY = "runtime-config.toml"


def overlay_problems(overlay) -> list[str]:
    """What in the overlay's kustomization breaks the wiring above."""
    kz = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    out = []
    if "../app" not in (kz.get("resources") or []):
        out.append("the overlay does not build on ../app")
    gens = [g for g in kz.get("secretGenerator", []) if SECRET_KEY in g.get("files", [])]
    if len(gens) != 1:
        out.append(f"no single secretGenerator with {SECRET_KEY}")
        return out
    secret = gens[0]["name"]
    if not gens[0].get("options", {}).get("disableNameSuffixHash"):
        out.append("the generated Secret gets a hash suffix: loadFromSecret would name a Secret that does not exist")
    if not (overlay / SECRET_KEY).exists():
        out.append(f"{SECRET_KEY} is missing")
    ops = []
    for p in kz.get("patches", []):
        if p.get("target", {}).get("kind") == "SpinApp" and p["target"].get("name") == "cmk-ingest":
            ops += yaml.safe_load(p["patch"])
    by_path = {(o["op"], o["path"]): o.get("value") for o in ops}
    if ("remove", "/spec/variables") not in by_path:
        out.append("the base's variable references stay: they name variables the Key Vault image does not declare")
    rc = by_path.get(("add", "/spec/runtimeConfig")) or by_path.get(("replace", "/spec/runtimeConfig"))
    if not rc or rc.get("loadFromSecret") != secret:
        out.append(f"the SpinApp does not load its runtime config from the Secret {secret}")
    image = by_path.get(("replace", "/spec/image")) or ""
    if "keyvault" not in image:
        out.append("the SpinApp does not run the image pushed from spin-keyvault.toml")
    return out


def rendered_problems(overlay) -> list[str]:
    """The same, on what `kubectl kustomize` renders (kubectl's built-in
    kustomize, offline)."""
    r = subprocess.run(["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return [f"kubectl kustomize failed: {r.stderr.strip()}"]
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    apps = [d for d in docs if d["kind"] == "SpinApp"]
    if len(apps) != 1:
        return [f"{len(apps)} SpinApps rendered"]
    spec, out = apps[0]["spec"], []
    name = spec.get("runtimeConfig", {}).get("loadFromSecret")
    secret = next((d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == name), None)
    if not secret or SECRET_KEY not in secret.get("data", {}):
        out.append(f"no rendered Secret {name!r} with key {SECRET_KEY}")
    if "variables" in spec:
        out.append("the rendered SpinApp still has variables")
    if "keyvault" not in spec.get("image", ""):
        out.append(f"the rendered SpinApp runs {spec.get('image')}")
    return out


def test_the_overlay_wires_the_runtime_config_secret_into_the_spinapp():
    assert overlay_problems(infra_lib.INFRA / "deploy" / "keyvault") == []


def test_the_overlay_renders_as_wired():
    if not shutil.which("kubectl"):
        import pytest

        pytest.skip("kubectl is not installed (the static check above still runs)")
    assert rendered_problems(infra_lib.INFRA / "deploy" / "keyvault") == []


def test_a_broken_overlay_is_refused(tree_copy):
    overlay = tree_copy / "deploy" / "keyvault"
    kz = overlay / "kustomization.yaml"
    good = kz.read_text()
    for old, new in [
        ("loadFromSecret: cmk-ingest-runtime-config", "loadFromSecret: other-secret"),
        ("      - op: remove\n        path: /spec/variables\n", ""),
        ("disableNameSuffixHash: true", "disableNameSuffixHash: false"),
        ("cmk-ingest-keyvault:0.1.0", "cmk-ingest:0.1.0"),
        ("  - ../app\n", ""),
    ]:
        assert old in good, old
        kz.write_text(good.replace(old, new))
        assert overlay_problems(overlay), f"passed with {old!r} -> {new!r}"
        if shutil.which("kubectl"):
            assert rendered_problems(overlay), f"rendered fine with {old!r} -> {new!r}"
    kz.write_text(good)
