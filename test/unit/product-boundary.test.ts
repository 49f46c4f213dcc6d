// The product (src/) stands alone: it never imports the lab (lab/: pods,
// measurement tools, demo, kernel matrix), the bench or the tests, and needs
// no devDependency, so the image can ship dist/src and nothing else. The only
// way from the product into the lab is src/cli/lab.ts, which looks for the
// lab at run time and says plainly when this installation has none.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { builtinModules } from 'node:module';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const src = path.join(repo, 'src');
const pkg = JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };

function tsFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? tsFiles(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

interface Imports { literal: string[]; computed: number }

/** Every module a file names (import, export ... from, import type, import('literal')), and how many import() take a computed argument. */
function importsOf(file: string): Imports {
  const sf = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true);
  const literal: string[] = [];
  let computed = 0;
  const visit = (n: ts.Node): void => {
    if ((ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier)) {
      literal.push(n.moduleSpecifier.text);
    } else if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const a = n.arguments[0];
      if (a && ts.isStringLiteralLike(a)) literal.push(a.text); else computed++;
    } else if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument) && ts.isStringLiteral(n.argument.literal)) {
      literal.push(n.argument.literal.text);
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return { literal, computed };
}

const packageOf = (spec: string) => spec.split('/').slice(0, spec.startsWith('@') ? 2 : 1).join('/');
const builtin = new Set(builtinModules);

test('no file under src/ imports from outside src/ (lab, bench, test) or a devDependency', () => {
  const files = tsFiles(src);
  assert.ok(files.length > 40, `found the sources (${files.length} files under ${src})`);
  const problems: string[] = [];
  for (const f of files) {
    const rel = path.relative(repo, f);
    for (const spec of importsOf(f).literal) {
      if (spec.startsWith('.')) {
        const to = path.resolve(path.dirname(f), spec);
        if (path.relative(src, to).startsWith('..')) problems.push(`${rel} imports ${path.relative(repo, to)}`);
      } else if (!spec.startsWith('node:') && !builtin.has(spec) && !(packageOf(spec) in pkg.dependencies)) {
        problems.push(`${rel} imports ${spec}, not a runtime dependency in package.json`);
      }
    }
  }
  assert.deepEqual(problems, []);
});

// Where the product starts: the executable, and the self-test's peer, which
// the agent spawns as a script of its own (src/agent/selftest.ts).
const ENTRIES = ['src/cli/main.ts', 'src/agent/selftest-peer.ts'];

test('every module under src/ is part of the product: the CLI or the agent loads it', () => {
  const seen = new Set<string>();
  const visit = (file: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const spec of importsOf(file).literal.filter((s) => s.startsWith('.'))) {
      const base = path.resolve(path.dirname(file), spec).replace(/\.js$/, '');
      const target = [`${base}.ts`, `${base}.d.ts`].find((f) => fs.existsSync(f));
      assert.ok(target, `${path.relative(repo, file)} imports ${spec}, which has no source`);
      visit(target);
    }
  };
  ENTRIES.forEach((e) => visit(path.join(repo, e)));
  const unused = tsFiles(src).filter((f) => !seen.has(f)).map((f) => path.relative(repo, f));
  assert.deepEqual(unused, [], 'only tests, demo or bench use these: they belong in lab/');
});

test('the lab is reached from src/ only through src/cli/lab.ts, by a path found at run time', () => {
  const computed = tsFiles(src).flatMap((f) => Array(importsOf(f).computed).fill(path.relative(repo, f)) as string[]);
  assert.deepEqual(computed, ['src/cli/lab.ts']);
});

test('the image builds and ships the product alone: no lab, bench or tests in any stage', () => {
  const docker = fs.readFileSync(path.join(repo, 'Dockerfile'), 'utf8');
  const copies = [...docker.matchAll(/^COPY (?:--from=\S+ )?(.+) \S+$/gm)].flatMap((m) => m[1]!.split(/\s+/));
  assert.ok(copies.includes('src') && copies.includes('/src/dist/src'), `the build stage copies src/, the runtime stage dist/src: ${copies.join(', ')}`);
  const outside = copies.filter((p) => /(^|\/)(lab|bench|test)(\/|$)/.test(p) || /\/dist\/?$/.test(p));
  assert.deepEqual(outside, []);
  assert.match(docker, /^RUN bash scripts\/build\.sh --product /m, 'the build stage builds the product alone');
});

// An installation like the image: dist/src alone, no dist/lab beside it.
const image = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-product-'));
after(() => fs.rmSync(image, { recursive: true, force: true }));

test('demo and bench say plainly that an installation without the lab has none, and still reach the lab in a checkout', () => {
  fs.writeFileSync(path.join(image, 'package.json'), JSON.stringify({ type: 'module' }));
  fs.cpSync(path.join(repo, 'dist/src'), path.join(image, 'dist/src'), { recursive: true });
  fs.symlinkSync(path.join(repo, 'node_modules'), path.join(image, 'node_modules'));
  for (const command of ['demo', 'bench']) {
    // --rounds 0 is refused by the lab's own option check before anything is built.
    const there = spawnSync(process.execPath, [path.join(image, 'dist/src/cli/main.js'), command, '--rounds', '0'], { encoding: 'utf8' });
    assert.equal(there.status, 1, `${command} without the lab: ${there.stderr}`);
    assert.match(there.stderr, new RegExp(`^sidecar-accel: ${command} is part of the lab, which this installation does not have .*source checkout`, 'm'));
    const here = spawnSync(process.execPath, [path.join(repo, 'dist/src/cli/main.js'), command, '--rounds', '0'], { encoding: 'utf8' });
    assert.equal(here.status, 2, `${command} in the checkout reaches the lab's option check: ${here.stderr}`);
    assert.match(here.stderr, new RegExp(`^sidecar-accel: ${command}: --rounds`, 'm'));
  }
});
