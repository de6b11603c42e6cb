/*
 * lib.mjs: what the browser tests share: where the server binary and
 * Chromium are, Chromium's headless flags, bounded waits, a free loopback
 * port and a small HTTP GET. Each script keeps its own server and page.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '..', '..');
export const BIN = path.resolve(process.env.PM_BIN || path.join(repo, 'p2pmesh'));
export const CHROMIUM = '/usr/bin/chromium';
/* Headless, no sandbox (root in a namespace), nothing reaching out. */
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
    '--no-first-run', '--disable-background-networking', '--disable-component-update',
    '--disable-sync'];

export function say(s) {
    process.stdout.write(s + '\n');
}

/* A failure with a reason (not a crash of the script). */
export class Fail extends Error {}

/* p, or a Fail saying why after ms. */
export function bounded(p, ms, why) {
    let t;
    const timeout = new Promise((_, rej) => {
        t = setTimeout(() => rej(new Fail(why + ' (after ' + ms + ' ms)')), ms);
    });
    return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

export function executable(file) {
    try {
        fs.accessSync(file, fs.constants.X_OK);
        return fs.statSync(file).isFile();
    } catch {
        return false;
    }
}

export function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

/* GET url within ms: { status, type, headers, body } (body up to 1 MiB);
 * status 0 when there was no answer. */
export function httpGet(url, ms) {
    return new Promise((resolve) => {
        const req = http.get(url, { timeout: ms }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (d) => { if (body.length < 1 << 20) body += d; });
            res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'] || '', headers: res.headers, body }));
            res.on('error', () => resolve({ status: 0 }));
        });
        req.on('timeout', () => req.destroy());
        req.on('error', () => resolve({ status: 0 }));
    });
}
