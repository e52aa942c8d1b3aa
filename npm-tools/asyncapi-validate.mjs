#!/usr/bin/env node
// Validates an AsyncAPI document with the official parser (@asyncapi/parser,
// pinned in package.json).
//
//   node npm-tools/asyncapi-validate.mjs docs/asyncapi.json
//
// Prints `FILE: severity code at path: message` for each diagnostic (errors
// and warnings; information and hints too) and exits 1 if there is any
// error, 0 if there is none, 2 on a usage or read error. It parses the
// document in full (`parse`, which validates it against the specification's
// JSON Schema and the parser's own rules, then parses every payload schema).
import { readFile } from "node:fs/promises";

import parserModule from "@asyncapi/parser";

const { Parser, DiagnosticSeverity } = parserModule;
const NAMES = { 0: "error", 1: "warning", 2: "information", 3: "hint" };

async function main(args) {
  if (args.length !== 1 || args[0] === "-h" || args[0] === "--help") {
    process.stderr.write("usage: node npm-tools/asyncapi-validate.mjs FILE\n");
    return 2;
  }
  const [file] = args;
  let source;
  try {
    source = await readFile(file, "utf8");
  } catch (error) {
    process.stderr.write(`${file}: cannot read: ${error.message}\n`);
    return 2;
  }
  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(source, { source: file });
  let errors = 0;
  for (const d of diagnostics) {
    if (d.severity === DiagnosticSeverity.Error) errors += 1;
    const where = d.path && d.path.length ? ` at /${d.path.join("/")}` : "";
    process.stdout.write(
      `${file}: ${NAMES[d.severity] ?? d.severity} ${d.code}${where}: ${d.message}\n`,
    );
  }
  // A document the parser gave up on is an error even without a diagnostic.
  return errors > 0 || document === undefined ? 1 : 0;
}

// exitCode rather than exit(): output written to a pipe is flushed first.
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    process.stderr.write(`${error.stack || error}\n`);
    process.exitCode = 2;
  },
);
