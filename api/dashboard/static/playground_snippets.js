/**
 * The playground's requests written out for the reader's own code: a Python snippet (the `openai` SDK for chat
 * completions, `httpx` for predictions, which the SDK has no method for) and a curl command, both with the exact
 * body the page sent and the key read from `SPARSEGRAD_API_KEY`.
 * @module playground_snippets
 */

const KEY_ENV = "SPARSEGRAD_API_KEY";
const INDENT = "    ";

/**
 * A JSON value as a Python literal (`true` → `True`, `null` → `None`; JSON string escapes are Python's too).
 * @param {any} value
 * @param {string} [indent=""] the indentation of the line the literal starts on
 * @returns {string}
 */
export function pythonLiteral(value, indent = "") {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
  const inner = indent + INDENT;
  if (Array.isArray(value)) {
    if (!value.some((v) => v !== null && typeof v === "object")) return `[${value.map((v) => pythonLiteral(v)).join(", ")}]`;
    return `[\n${value.map((v) => `${inner}${pythonLiteral(v, inner)},\n`).join("")}${indent}]`;
  }
  const entries = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pythonLiteral(v, indent)}`);
  return `{${entries.join(", ")}}`;
}

/** Python keyword arguments, one a line. */
function keywordArguments(body) {
  return Object.entries(body).map(([k, v]) => `${INDENT}${k}=${pythonLiteral(v, INDENT)},\n`).join("");
}

/** `text` quoted for a POSIX shell (single quotes; a single quote becomes '\''). */
function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

/**
 * A curl command that sends `body` to `url` with the key from the environment.
 * @param {string} url
 * @param {object} body
 * @returns {string}
 */
export function curlCommand(url, body) {
  return [
    `curl ${body.stream ? "--no-buffer " : ""}${shellQuote(url)}`,
    `  -H "Authorization: Bearer $${KEY_ENV}"`,
    "  -H \"Content-Type: application/json\"",
    `  -d ${shellQuote(JSON.stringify(body, null, 2))}`,
  ].join(" \\\n");
}

/**
 * The chat completion request `body` as Python with the `openai` SDK (streamed when `body.stream`).
 * @param {string} baseUrl this server's `/v1` URL
 * @param {object} body the request body
 * @returns {string}
 */
export function openaiChatSnippet(baseUrl, body) {
  const head = [
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${JSON.stringify(baseUrl)}, api_key=os.environ[${JSON.stringify(KEY_ENV)}])`,
  ].join("\n");
  if (!body.stream) {
    return `${head}\nanswer = client.chat.completions.create(\n${keywordArguments(body)})\n`
      + "print(answer.choices[0].message.content)\n";
  }
  return `${head}\nstream = client.chat.completions.create(\n${keywordArguments(body)})\n`
    + "for chunk in stream:\n"
    + `${INDENT}if chunk.choices:\n`
    + `${INDENT}${INDENT}print(chunk.choices[0].delta.content or "", end="", flush=True)\n`
    + `${INDENT}if chunk.usage:\n`
    + `${INDENT}${INDENT}print("\\n", chunk.usage)\n`;
}

/**
 * The predict request `body` as Python with `httpx`.
 * @param {string} baseUrl this server's `/v1` URL
 * @param {object} body `{model, texts, text_pairs?}`
 * @returns {string}
 */
export function httpxPredictSnippet(baseUrl, body) {
  return [
    "import os",
    "",
    "import httpx",
    "",
    "response = httpx.post(",
    `${INDENT}${JSON.stringify(`${baseUrl}/predict`)},`,
    `${INDENT}headers={"Authorization": f"Bearer {os.environ['${KEY_ENV}']}"},`,
    `${INDENT}json=${pythonLiteral(body, INDENT)},`,
    `${INDENT}timeout=300,`,
    ")",
    "response.raise_for_status()",
    "for prediction in response.json()[\"data\"]:",
    `${INDENT}print(prediction["label"], prediction["score"], prediction["probabilities"])`,
    "",
  ].join("\n");
}
