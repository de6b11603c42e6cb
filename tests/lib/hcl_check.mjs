#!/usr/bin/env node
// hcl_check.mjs: syntax and format check for Terraform files, without terraform.
//
//   node tests/lib/hcl_check.mjs DIR...        check every *.tf, *.tfvars and
//                                              *.tfvars.example under each DIR
//   node tests/lib/hcl_check.mjs --json PATH   print what @cdktf/hcl2json makes of
//                                              PATH (a file: its JSON; a directory:
//                                              {"relative/path.tf": JSON, ...})
//
// A file passes when @cdktf/hcl2json parses it and @cdktf/hcl-tools format
// (terraform fmt rules) leaves it byte for byte unchanged. One line per failing
// file on stdout, naming the file and the reason. Exit 0: every file passed;
// 1: a file failed, or a DIR holds no Terraform file at all; 2: usage error or
// the npm packages are missing (tests/lib/deps.sh test installs them).
//
// The packages are resolved from the tests directory (tests/node_modules), so
// this runs from any working directory.

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const testsDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(testsDir, "package.json"));

const SKIP_DIRS = new Set([".terraform", "node_modules", ".git"]);
const HCL_FILE = /(\.tf|\.tfvars|\.tfvars\.example)$/;

function usage(msg) {
  if (msg) process.stderr.write(`hcl_check: ${msg}\n`);
  process.stderr.write("usage: hcl_check.mjs DIR... | hcl_check.mjs --json PATH\n");
  process.exit(2);
}

function loadPackages() {
  try {
    return {
      parse: require("@cdktf/hcl2json").parse,
      format: require("@cdktf/hcl-tools").format,
    };
  } catch (err) {
    process.stderr.write(
      `hcl_check: @cdktf/hcl2json and @cdktf/hcl-tools are needed in ${testsDir}/node_modules ` +
        `(tests/lib/deps.sh test): ${err.message.split("\n")[0]}\n`,
    );
    process.exit(2);
  }
}

// Every HCL file under dir, sorted, skipping .terraform caches and the like.
function hclFiles(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        if (!SKIP_DIRS.has(e.name)) walk(p);
      } else if (e.isFile() && HCL_FILE.test(e.name)) {
        out.push(p);
      }
    }
  };
  walk(dir);
  return out;
}

// The error text of hcl2json on one line, without the Go wrapper noise.
function oneLine(err) {
  return String(err && err.message ? err.message : err)
    .replace(/^Error:\s*/, "")
    .replace(/\s+/g, " ")
    .trim();
}

function firstDifference(a, b) {
  const la = a.split("\n");
  const lb = b.split("\n");
  for (let i = 0; i < Math.max(la.length, lb.length); i++) {
    if (la[i] !== lb[i]) return i + 1;
  }
  return la.length;
}

async function checkFile(pkgs, file, shown) {
  const src = fs.readFileSync(file, "utf8");
  try {
    await pkgs.parse(path.basename(file), src);
  } catch (err) {
    return `${shown}: parse error: ${oneLine(err)}`;
  }
  const formatted = await pkgs.format(src);
  if (formatted !== src) {
    return `${shown}: not formatted: hcl-tools format (terraform fmt) changes line ${firstDifference(src, formatted)}`;
  }
  return null;
}

async function checkDirs(dirs) {
  const pkgs = loadPackages();
  let failed = 0;
  let checked = 0;
  for (const dir of dirs) {
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
      console.log(`${dir}: not a directory`);
      failed++;
      continue;
    }
    const files = hclFiles(dir);
    if (files.length === 0) {
      console.log(`${dir}: no .tf, .tfvars or .tfvars.example file found`);
      failed++;
      continue;
    }
    for (const f of files) {
      checked++;
      const problem = await checkFile(pkgs, f, path.relative(process.cwd(), f) || f);
      if (problem) {
        console.log(problem);
        failed++;
      }
    }
  }
  process.stderr.write(`hcl_check: ${checked} file(s) checked, ${failed} problem(s)\n`);
  return failed === 0 ? 0 : 1;
}

async function dumpJson(target) {
  const pkgs = loadPackages();
  if (!fs.existsSync(target)) usage(`${target}: no such file or directory`);
  if (fs.statSync(target).isDirectory()) {
    const all = {};
    for (const f of hclFiles(target)) {
      all[path.relative(target, f)] = await pkgs.parse(path.basename(f), fs.readFileSync(f, "utf8"));
    }
    process.stdout.write(JSON.stringify(all, null, 1) + "\n");
  } else {
    const json = await pkgs.parse(path.basename(target), fs.readFileSync(target, "utf8"));
    process.stdout.write(JSON.stringify(json, null, 1) + "\n");
  }
  return 0;
}

async function main(argv) {
  if (argv.length === 0 || argv.includes("-h") || argv.includes("--help")) usage();
  if (argv[0] === "--json") {
    if (argv.length !== 2) usage("--json takes exactly one PATH");
    return dumpJson(argv[1]);
  }
  if (argv.some((a) => a.startsWith("-"))) usage(`unknown option ${argv.find((a) => a.startsWith("-"))}`);
  return checkDirs(argv);
}

// exitCode rather than process.exit(): a large --json dump to a pipe must be
// flushed before the process ends.
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`hcl_check: ${oneLine(err)}\n`);
    process.exitCode = 1;
  },
);
