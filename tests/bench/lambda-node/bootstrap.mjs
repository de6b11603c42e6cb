#!/usr/bin/env node
// bootstrap.mjs: a minimal AWS Lambda custom runtime in Node.js serving API
// Gateway WebSocket events, the comparison point of tests/bench/lambda_bench.py
// (method and results: docs/benchmarks.md, "Lambda runtime (issue 4)").
//
// It does the same work as `p2pmesh --role=lambda` for the events the
// benchmark sends, with nothing but Node's own modules (http, https, crypto):
//   $connect         PutItem {connectionId, realm, ttl, connectedAt}, 200
//   join             UpdateItem (peerId, realm, ttl), Query the realm's GSI,
//                    POST bootstrap_peers to the connection
//   ping             UpdateItem of the connection's ttl (condition: it
//                    exists), then POST {"type":"pong","timestamp":T} to it
//   $disconnect      DeleteItem
//   binary frames    ("isBase64Encoded": true) answered 200 at once
// DynamoDB calls are SigV4-signed for service dynamodb, PostToConnection for
// execute-api (canonical URI: the wire path encoded once more, so '@' ->
// %40 and %3D -> %253D), both with X-Amz-Security-Token. A 410 deletes the
// connection. Other messages are answered 200 without work (the benchmark
// sends none). Keep-alive agents everywhere; /next has no timeout.
//
// Environment: AWS_LAMBDA_RUNTIME_API, AWS_REGION, AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN; APIGW_ENDPOINT (default
// https://{domainName}/{stage}), DDB_ENDPOINT (default
// https://dynamodb.{region}.amazonaws.com/), CONNECTIONS_TABLE
// (p2pmesh-connections), CONNECTIONS_INDEX (realm-index), CONNECTION_TTL
// (seconds, 660).

import http from 'node:http';
import https from 'node:https';
import crypto from 'node:crypto';

const env = process.env;
const RUNTIME = `http://${env.AWS_LAMBDA_RUNTIME_API}/2018-06-01`;
const REGION = env.AWS_REGION || env.AWS_DEFAULT_REGION || '';
const CREDS = {
  id: env.AWS_ACCESS_KEY_ID || '',
  secret: env.AWS_SECRET_ACCESS_KEY || '',
  token: env.AWS_SESSION_TOKEN || '',
};
const APIGW = env.APIGW_ENDPOINT ? env.APIGW_ENDPOINT.replace(/\/+$/, '') : null;
const DDB = env.DDB_ENDPOINT || `https://dynamodb.${REGION}.amazonaws.com/`;
const TABLE = env.CONNECTIONS_TABLE || 'p2pmesh-connections';
const INDEX = env.CONNECTIONS_INDEX || 'realm-index';
const TTL = Number(env.CONNECTION_TTL || 660);

const agents = {
  'http:': new http.Agent({ keepAlive: true }),
  'https:': new https.Agent({ keepAlive: true }),
};
const runtimeAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });

// ---- HTTP -----------------------------------------------------------------

// One request; resolves {status, headers, body (Buffer)}. timeoutMs 0: none.
function request(url, { method = 'GET', headers = {}, body = null, agent, timeoutMs = 0 } = {}) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : http;
    const h = { ...headers };
    if (body !== null) h['Content-Length'] = Buffer.byteLength(body);
    const req = mod.request({
      protocol: u.protocol, hostname: u.hostname, port: u.port,
      path: u.pathname + u.search, method, headers: h,
      agent: agent || agents[u.protocol],
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (timeoutMs > 0) req.setTimeout(timeoutMs, () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.end(body === null ? undefined : body);
  });
}

// ---- SigV4 ----------------------------------------------------------------

const sha256 = (data) => crypto.createHash('sha256').update(data).digest('hex');
const hmac = (key, data) => crypto.createHmac('sha256', key).update(data).digest();

// RFC 3986 encoding of every byte but A-Z a-z 0-9 - _ . ~ (and '/' if kept).
function uriEncode(s, keepSlash) {
  const e = encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
  return keepSlash ? e.replace(/%2F/g, '/') : e;
}

const keyCache = new Map();
function signingKey(date, service) {
  const k = `${date}/${service}`;
  let key = keyCache.get(k);
  if (!key) {
    key = hmac(hmac(hmac(hmac('AWS4' + CREDS.secret, date), REGION), service), 'aws4_request');
    keyCache.clear();
    keyCache.set(k, key);
  }
  return key;
}

// Headers (to send) for a signed request: Host, X-Amz-Date,
// X-Amz-Security-Token and Authorization added to `headers`. The canonical
// URI is the wire path URI-encoded once more (every service but S3).
function sign(method, url, service, headers, body) {
  const u = new URL(url);
  const amzDate = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const date = amzDate.slice(0, 8);
  const all = { ...headers, host: u.host, 'x-amz-date': amzDate };
  if (CREDS.token) all['x-amz-security-token'] = CREDS.token;
  const names = Object.keys(all).map((n) => n.toLowerCase()).sort();
  const lower = {};
  for (const [k, v] of Object.entries(all)) lower[k.toLowerCase()] = String(v).trim().replace(/ +/g, ' ');
  const signed = names.join(';');
  const canonical = [
    method,
    uriEncode(u.pathname || '/', true),
    '', // no query strings here
    names.map((n) => `${n}:${lower[n]}\n`).join(''),
    signed,
    sha256(body || ''),
  ].join('\n');
  const scope = `${date}/${REGION}/${service}/aws4_request`;
  const toSign = `AWS4-HMAC-SHA256\n${amzDate}\n${scope}\n${sha256(canonical)}`;
  const sig = crypto.createHmac('sha256', signingKey(date, service)).update(toSign).digest('hex');
  all.authorization = `AWS4-HMAC-SHA256 Credential=${CREDS.id}/${scope}, SignedHeaders=${signed}, Signature=${sig}`;
  return all;
}

// ---- DynamoDB and @connections ----------------------------------------------

class AwsError extends Error {
  constructor(msg, type) { super(msg); this.errorType = type; }
}

async function ddb(op, params, timeoutMs) {
  const body = JSON.stringify({ TableName: TABLE, ...params });
  const headers = sign('POST', DDB, 'dynamodb', {
    'content-type': 'application/x-amz-json-1.0',
    'x-amz-target': `DynamoDB_20120810.${op}`,
  }, body);
  const res = await request(DDB, { method: 'POST', headers, body, timeoutMs });
  const out = res.body.length ? JSON.parse(res.body.toString('utf8')) : {};
  if (res.status !== 200) {
    const type = String(out.__type || '').split('#').pop();
    if (type === 'ConditionalCheckFailedException') return null;
    throw new AwsError(`dynamodb ${op}: ${res.status} ${type} ${out.message || ''}`, 'Function.StoreFailed');
  }
  return out;
}

// PostToConnection; false when the connection is gone (410, then deleted).
async function post(base, cid, data, timeoutMs) {
  const url = `${base}/@connections/${uriEncode(cid, false)}`;
  const headers = sign('POST', url, 'execute-api', {}, data);
  const res = await request(url, { method: 'POST', headers, body: data, timeoutMs });
  if (res.status === 410) {
    await ddb('DeleteItem', { Key: { connectionId: { S: cid } } }, timeoutMs);
    return false;
  }
  if (res.status !== 200) {
    throw new AwsError(`PostToConnection ${cid}: ${res.status} ${res.body.toString('utf8')}`, 'Function.PostFailed');
  }
  return true;
}

// ---- the handler ------------------------------------------------------------

const OK = '{"statusCode":200}';
const nowS = () => Math.floor(Date.now() / 1000);

async function handle(event, remainingMs) {
  if (event.isBase64Encoded === true) return OK; // API Gateway closes binary frames (1003)
  const rc = event.requestContext || {};
  const cid = rc.connectionId;
  if (typeof rc.routeKey !== 'string' || typeof cid !== 'string' || cid === '') {
    throw new AwsError('not an API Gateway WebSocket event', 'Function.InvalidEvent');
  }
  const base = APIGW || `https://${rc.domainName}/${rc.stage}`;
  const t = Math.max(remainingMs - 100, 1);
  if (rc.routeKey === '$connect') {
    await ddb('PutItem', {
      Item: {
        connectionId: { S: cid }, realm: { S: 'r:' }, ttl: { N: String(nowS() + TTL) },
        connectedAt: { N: String(Date.now()) },
      },
    }, t);
    return OK;
  }
  if (rc.routeKey === '$disconnect') {
    await ddb('DeleteItem', { Key: { connectionId: { S: cid } } }, t);
    return OK;
  }
  let msg;
  try {
    msg = JSON.parse(event.body);
  } catch {
    await post(base, cid, JSON.stringify({ type: 'error', message: 'invalid JSON' }), t);
    return OK;
  }
  if (msg === null || typeof msg !== 'object') return OK;
  if (msg.type === 'ping') {
    const old = await ddb('UpdateItem', {
      Key: { connectionId: { S: cid } },
      UpdateExpression: 'SET #t = :t',
      ConditionExpression: 'attribute_exists(connectionId)',
      ExpressionAttributeNames: { '#t': 'ttl' },
      ExpressionAttributeValues: { ':t': { N: String(nowS() + TTL) } },
      ReturnValues: 'ALL_OLD',
    }, t);
    if (old === null) return OK; // unknown connection
    await post(base, cid, JSON.stringify({ type: 'pong', timestamp: msg.timestamp }), t);
    return OK;
  }
  if (msg.type === 'join' && typeof msg.peerId === 'string') {
    const realm = 'r:' + (typeof msg.roomId === 'string' ? msg.roomId : '');
    await ddb('UpdateItem', {
      Key: { connectionId: { S: cid } },
      UpdateExpression: 'SET #p = :p, #r = :r, #t = :t',
      ExpressionAttributeNames: { '#p': 'peerId', '#r': 'realm', '#t': 'ttl' },
      ExpressionAttributeValues: { ':p': { S: msg.peerId }, ':r': { S: realm }, ':t': { N: String(nowS() + TTL) } },
    }, t);
    const q = await ddb('Query', {
      IndexName: INDEX,
      KeyConditionExpression: '#r = :r',
      FilterExpression: '#t > :now',
      ProjectionExpression: 'connectionId, peerId, #t',
      ExpressionAttributeNames: { '#r': 'realm', '#t': 'ttl' },
      ExpressionAttributeValues: { ':r': { S: realm }, ':now': { N: String(nowS()) } },
    }, t);
    const peers = (q.Items || []).filter((it) => it.connectionId.S !== cid).map((it) => it.peerId.S);
    await post(base, cid, JSON.stringify({ type: 'bootstrap_peers', peers }), t);
    return OK;
  }
  return OK;
}

// ---- the Runtime API loop -----------------------------------------------------

function errorBody(err) {
  return JSON.stringify({ errorMessage: String(err && err.message || err), errorType: err.errorType || 'Runtime.Unknown', stackTrace: [] });
}

async function main() {
  if (!env.AWS_LAMBDA_RUNTIME_API || !REGION) {
    const err = new AwsError('AWS_LAMBDA_RUNTIME_API and AWS_REGION must be set', 'Runtime.ConfigInvalid');
    if (env.AWS_LAMBDA_RUNTIME_API) {
      await request(`${RUNTIME}/runtime/init/error`, {
        method: 'POST', agent: runtimeAgent, body: errorBody(err),
        headers: { 'Content-Type': 'application/json', 'Lambda-Runtime-Function-Error-Type': err.errorType },
      });
    }
    console.error(err.message);
    process.exit(1);
  }
  for (let failures = 0; ;) {
    let next;
    try {
      next = await request(`${RUNTIME}/runtime/invocation/next`, { agent: runtimeAgent });
      if (next.status !== 200) throw new Error(`GET /next: ${next.status} ${next.body}`);
      failures = 0;
    } catch (e) {
      if (++failures > 3) { console.error(String(e)); process.exit(1); }
      await new Promise((r) => setTimeout(r, 100));
      continue;
    }
    const id = next.headers['lambda-runtime-aws-request-id'];
    const trace = next.headers['lambda-runtime-trace-id'];
    if (trace) process.env._X_AMZN_TRACE_ID = trace;
    else delete process.env._X_AMZN_TRACE_ID;
    const deadline = Number(next.headers['lambda-runtime-deadline-ms']) || Date.now() + 3000;
    let path, body, headers = { 'Content-Type': 'application/json' };
    try {
      body = await handle(JSON.parse(next.body.toString('utf8')), deadline - Date.now());
      path = 'response';
    } catch (e) {
      body = errorBody(e);
      path = 'error';
      headers['Lambda-Runtime-Function-Error-Type'] = e.errorType || 'Runtime.Unknown';
    }
    const res = await request(`${RUNTIME}/runtime/invocation/${id}/${path}`, { method: 'POST', agent: runtimeAgent, headers, body });
    if (res.status !== 202) {
      console.error(`answer to ${id} not accepted: ${res.status} ${res.body}`);
      process.exit(1);
    }
  }
}

main();
