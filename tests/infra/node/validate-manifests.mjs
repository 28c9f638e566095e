// Validates Kubernetes objects offline with the kubernetes-models packages
// (OpenAPI schemas of the built-in kinds, and of KEDA's CRDs): types, enums,
// formats and required fields. Reads a JSON array [{file, doc}] on stdin and
// writes [{file, kind, name, status: "valid"|"invalid"|"no-model", errors}].
import path from "node:path";
import { pathToFileURL } from "node:url";

const nodeModules = process.argv[2];
const MODELS = {
  "keda.sh/": "@kubernetes-models/keda",
};

async function modelFor(apiVersion, kind) {
  let pkg = "kubernetes-models", gv = apiVersion;
  for (const [prefix, p] of Object.entries(MODELS)) if (apiVersion.startsWith(prefix)) pkg = p;
  if (pkg === "kubernetes-models" && apiVersion.includes(".") && !apiVersion.includes("k8s.io")) return null;
  const file = path.join(nodeModules, pkg, gv, `${kind}.js`);
  try {
    const mod = await import(pathToFileURL(file).href);
    return mod[kind] || null;
  } catch {
    return null;
  }
}

let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = [];
for (const { file, doc } of JSON.parse(input)) {
  const entry = { file, kind: doc.kind, name: doc.metadata?.name, status: "valid", errors: [] };
  const Model = await modelFor(doc.apiVersion || "", doc.kind || "");
  if (!Model) entry.status = "no-model";
  else {
    try {
      new Model(doc).validate();
    } catch (e) {
      entry.status = "invalid";
      entry.errors.push(String(e.message || e));
    }
  }
  out.push(entry);
}
process.stdout.write(JSON.stringify(out, null, 1) + "\n");
