# SpinKube on the cluster, pinned. Order: cert-manager (the Spin operator's
# webhook certificates) -> runtime-class-manager (installs containerd-shim-spin
# on nodes labelled spin=true and creates the wasmtime-spin-v2 RuntimeClass
# from the Shim in infra/deploy/spinkube) -> spin-operator (its CRDs are
# applied first from infra/deploy/spinkube, see infra/README.md).
locals {
  spinkube_versions = {
    cert_manager          = "v1.17.2"
    runtime_class_manager = "0.2.0"
    spin_operator         = "0.6.1"
  }
}

resource "helm_release" "cert_manager" {
  name             = "cert-manager"
  namespace        = "cert-manager"
  create_namespace = true
  repository       = "https://charts.jetstack.io"
  chart            = "cert-manager"
  version          = local.spinkube_versions.cert_manager
  atomic           = true
  values           = [yamlencode({
    crds = { enabled = true }
  })]
}

resource "helm_release" "runtime_class_manager" {
  name             = "rcm"
  namespace        = "rcm"
  create_namespace = true
  repository       = "oci://ghcr.io/spinframework/charts"
  chart            = "runtime-class-manager"
  version          = local.spinkube_versions.runtime_class_manager
  atomic           = true
  depends_on       = [helm_release.cert_manager]
}

resource "helm_release" "spin_operator" {
  name             = "spin-operator"
  namespace        = "spin-operator"
  create_namespace = true
  repository       = "oci://ghcr.io/spinframework/charts"
  chart            = "spin-operator"
  version          = local.spinkube_versions.spin_operator
  atomic           = true
  depends_on       = [helm_release.cert_manager, helm_release.runtime_class_manager]
}
