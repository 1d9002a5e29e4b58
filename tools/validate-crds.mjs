// Validates the custom resources of deploy/kubernetes/ that kubernetes-validate has no schema for:
// cert-manager's Certificate and the Prometheus Operator's ServiceMonitor and PrometheusRule.
//
// Two checks per object, both from the @kubernetes-models packages, which are generated from the
// projects' own API types (tools/package.json pins them):
// - the packages' validators: types, required fields, enums, patterns and formats;
// - unknown fields, which those validators let through: every key must be a property of the
//   type the packages declare for it (read from their .d.ts files), as `kubectl apply` with
//   strict field validation would demand.
//
// Input on stdin: a JSON array of objects. Prints one line per problem, or one "ok" line per
// object; exits 1 if there is any problem.

import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { Certificate } from "@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const MODELS = fileURLToPath(new URL("./node_modules/@kubernetes-models/", import.meta.url));

// apiVersion/kind → the model class and the name its package declares the type under.
const KINDS = {
  "cert-manager.io/v1/Certificate": {
    model: Certificate,
    type: "IComGithubCertManagerCertManagerPkgApisCertmanagerV1Certificate",
  },
  "monitoring.coreos.com/v1/ServiceMonitor": {
    model: ServiceMonitor,
    type: "IComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1ServiceMonitor",
  },
  "monitoring.coreos.com/v1/PrometheusRule": {
    model: PrometheusRule,
    type: "IComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1PrometheusRule",
  },
};

function* declarationFiles(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== "node_modules") yield* declarationFiles(path);
    } else if (entry.name.endsWith(".d.ts")) {
      yield path;
    }
  }
}

// Every interface the packages declare, by its exported name: property name → type text. A
// property whose type spans lines (an inline map or object) is recorded as "{".
function interfaces() {
  const found = new Map();
  for (const pkg of ["apimachinery", "cert-manager", "prometheus-operator"]) {
    for (const file of declarationFiles(join(MODELS, pkg))) {
      const text = readFileSync(file, "utf8");
      const local = new Map();
      for (const match of text.matchAll(/^export interface (\w+)[^{\n]*\{\n([\s\S]*?)^\}/gm)) {
        const props = new Map();
        for (const prop of match[2].matchAll(/^ {4}"([^"]+)"\??: (.*?);?$/gm)) {
          props.set(prop[1], prop[2]);
        }
        local.set(match[1], props);
      }
      for (const alias of text.matchAll(/^export type \{ ([^}]*) \}/gm)) {
        for (const pair of alias[1].split(",")) {
          const [name, exported] = pair.trim().split(/\s+as\s+/);
          if (local.has(name)) found.set(exported, local.get(name));
        }
      }
    }
  }
  return found;
}

// Keys of `value` that its declared `type` does not have, as paths.
function unknownFields(value, type, known, path) {
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    return Array.isArray(value)
      ? value.flatMap((item, i) => unknownFields(item, array[1], known, `${path}[${i}]`))
      : [];
  }
  const props = known.get(type);
  if (!props || value === null || typeof value !== "object" || Array.isArray(value)) return [];
  return Object.entries(value).flatMap(([key, child]) =>
    props.has(key)
      ? unknownFields(child, props.get(key), known, `${path}.${key}`)
      : [`${path}.${key}: unknown field`],
  );
}

const objects = JSON.parse(readFileSync(0, "utf8"));
const known = interfaces();
let problems = 0;
for (const object of objects) {
  const name = `${object.kind}/${object.metadata?.name}`;
  const kind = KINDS[`${object.apiVersion}/${object.kind}`];
  if (!kind) {
    console.log(`${name}: no schema for ${object.apiVersion} ${object.kind}`);
    problems += 1;
    continue;
  }
  if (!known.has(kind.type)) {
    console.log(`${name}: the package declares no ${kind.type}`);
    problems += 1;
    continue;
  }
  const found = unknownFields(object, kind.type, known, name);
  try {
    new kind.model(object).validate();
  } catch (err) {
    found.push(`${name}: ${err.message}`);
  }
  for (const problem of found) console.log(problem);
  if (found.length === 0) console.log(`ok ${name}`);
  problems += found.length;
}
process.exit(problems === 0 ? 0 : 1);
