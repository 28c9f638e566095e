// Extracts, from the prebuilt Terraform provider bindings (@cdktf/provider-*,
// pinned in package.json), the schema of every resource and data source type
// that infra/terraform uses: argument names (required or optional), nested
// blocks (single or repeated) and the attributes a resource exports. The
// bindings are generated from each provider's own schema, so this is an
// offline copy of what `terraform providers schema -json` would say for the
// pinned provider versions, restricted to what the tree needs.
//
// usage: node provider-schema.mjs NODE_MODULES TERRAFORM_DIR... > provider-schema.json
import fs from "node:fs";
import path from "node:path";

const [nodeModules, ...tfDirs] = process.argv.slice(2);
if (!nodeModules || tfDirs.length === 0) {
  console.error("usage: node provider-schema.mjs NODE_MODULES TERRAFORM_DIR...");
  process.exit(2);
}

// Which provider package serves which type prefix.
const PROVIDERS = {
  azurerm: "@cdktf/provider-azurerm",
  helm: "@cdktf/provider-helm",
  random: "@cdktf/provider-random",
};

// 1. The types the tree uses.
const used = { resource: new Set(), data: new Set() };
for (const tfDir of tfDirs) {
  for (const f of fs.readdirSync(tfDir).filter((f) => f.endsWith(".tf")).sort()) {
    const text = fs.readFileSync(path.join(tfDir, f), "utf8");
    for (const m of text.matchAll(/^\s*(resource|data)\s+"([a-z0-9_]+)"\s+"/gm)) used[m[1]].add(m[2]);
  }
}

// Reads `readonly name?: Type;` members of every interface in a .d.ts, with
// the snake_case name Terraform uses (from the doc link above each member).
function interfaces(dts) {
  const out = {};
  for (const m of dts.matchAll(/export interface (\w+)(?: extends [\w.]+)? \{/g)) {
    let i = m.index + m[0].length, depth = 1;
    const start = i;
    while (depth > 0 && i < dts.length) {
      if (dts[i] === "{") depth++;
      else if (dts[i] === "}") depth--;
      i++;
    }
    const body = dts.slice(start, i - 1);
    const members = [];
    const re = /#([a-z0-9_]+) \w+#[a-z0-9_]+\}[\s\S]*?\*\/\s*readonly (\w+)(\??):\s*/g;
    let mm;
    while ((mm = re.exec(body))) {
      // the type runs to the first ';' outside braces
      let j = re.lastIndex, d = 0;
      while (j < body.length && !(body[j] === ";" && d === 0)) {
        if (body[j] === "{") d++;
        else if (body[j] === "}") d--;
        j++;
      }
      members.push({ tf: mm[1], js: mm[2], optional: mm[3] === "?", type: body.slice(re.lastIndex, j).trim() });
      re.lastIndex = j;
    }
    out[m[1]] = members;
  }
  return out;
}

function blockSchema(ifaces, name, seen = new Set()) {
  const attributes = {}, blocks = {};
  for (const p of ifaces[name] || []) {
    const t = p.type.replace(/\s*\|\s*cdktf\.IResolvable/g, "").trim();
    const many = t.endsWith("[]");
    const base = t.replace(/\[\]$/, "");
    if (ifaces[base] && !seen.has(base)) {
      blocks[p.tf] = { nesting: many ? "list" : "single", required: !p.optional, block: blockSchema(ifaces, base, new Set([...seen, base])) };
    } else {
      attributes[p.tf] = { required: !p.optional };
    }
  }
  return { attributes, blocks };
}

function schemaOf(kind, type) {
  const prefix = type.split("_")[0];
  const pkg = PROVIDERS[prefix];
  if (!pkg) throw new Error(`no provider package for ${type}`);
  const lib = path.join(nodeModules, pkg, "lib");
  const short = type.slice(prefix.length + 1).replace(/_/g, "-");
  const guess = path.join(lib, kind === "data" ? `data-${prefix}-${short}` : short);
  const marker = `tfResourceType = "${type}"`;
  let dir = fs.existsSync(path.join(guess, "index.d.ts")) && fs.readFileSync(path.join(guess, "index.d.ts"), "utf8").includes(marker) ? guess : null;
  if (!dir) {
    for (const d of fs.readdirSync(lib)) {
      const f = path.join(lib, d, "index.d.ts");
      if (fs.existsSync(f) && fs.readFileSync(f, "utf8").includes(marker) && d.startsWith("data-") === (kind === "data")) { dir = path.join(lib, d); break; }
    }
  }
  if (!dir) return null;
  const dts = fs.readFileSync(path.join(dir, "index.d.ts"), "utf8");
  const js = fs.readFileSync(path.join(dir, "index.js"), "utf8");
  const cls = dts.match(new RegExp(`export declare class (\\w+) extends cdktf\\.Terraform(?:Resource|DataSource) \\{[\\s\\S]*?${marker}`))[1];
  const s = blockSchema(interfaces(dts), `${cls}Config`);
  // Exported attributes: what the class reads back from state.
  const body = js.slice(js.indexOf(`class ${cls} extends cdktf.Terraform`), js.indexOf(`exports.${cls} = ${cls};`));
  const exported = new Set();
  for (const m of body.matchAll(/Attribute\('([a-z0-9_]+)'\)|\(this, "([a-z0-9_]+)"/g)) exported.add(m[1] || m[2]);
  s.exported = [...exported].sort();
  return s;
}

const versions = {};
for (const [prefix, pkg] of Object.entries(PROVIDERS)) {
  const pj = JSON.parse(fs.readFileSync(path.join(nodeModules, pkg, "package.json"), "utf8"));
  versions[prefix] = { source: pj.cdktf.provider.name, version: pj.cdktf.provider.version, bindings: `${pkg}@${pj.version}` };
}
const out = { comment: "Generated by tests/infra/node/provider-schema.mjs from the pinned provider bindings; do not edit. Regenerate: scripts/infra-check --regenerate-schema", providers: versions, resource: {}, data: {}, missing: [] };
for (const kind of ["resource", "data"]) {
  for (const type of [...used[kind]].sort()) {
    const s = schemaOf(kind, type);
    if (s) out[kind][type] = s;
    else out.missing.push(`${kind}.${type}`);
  }
}
process.stdout.write(JSON.stringify(out, null, 1) + "\n");
