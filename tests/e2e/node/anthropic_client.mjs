// Runs one Messages API call with the official @anthropic-ai/sdk against the proxy, for
// tests/e2e/test_messages_ingress.py. Reads {baseURL, apiKey, mode, params, headers} as JSON
// on stdin; prints {message, events, requestId} or {error: {status, type, message}} as JSON.
//   mode "create": client.messages.create(params)
//   mode "stream": client.messages.stream(params): every event type in order, and finalMessage()
//   mode "count":  client.messages.countTokens(params)
import Anthropic from "@anthropic-ai/sdk";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const job = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const client = new Anthropic({
  baseURL: job.baseURL,
  apiKey: job.apiKey,
  maxRetries: 0,
  timeout: 20000,
  defaultHeaders: job.headers || {},
});

try {
  let out;
  if (job.mode === "create") {
    const message = await client.messages.create(job.params);
    out = { message, requestId: message._request_id ?? null };
  } else if (job.mode === "stream") {
    const stream = client.messages.stream(job.params);
    const events = [];
    stream.on("streamEvent", (e) => events.push(e.type === "content_block_delta" ? `${e.type}:${e.delta.type}` : e.type));
    const message = await stream.finalMessage();
    out = { message, events };
  } else if (job.mode === "count") {
    out = { count: await client.messages.countTokens(job.params) };
  } else {
    throw new Error(`unknown mode ${job.mode}`);
  }
  process.stdout.write(JSON.stringify(out));
} catch (e) {
  if (e instanceof Anthropic.APIError) {
    process.stdout.write(JSON.stringify({ error: { status: e.status ?? null, type: e.error?.error?.type ?? null, message: e.message, cls: e.constructor.name } }));
  } else {
    process.stdout.write(JSON.stringify({ error: { status: null, type: "client", message: String(e && e.stack || e) } }));
  }
}
