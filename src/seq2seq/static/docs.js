// The API's OpenAPI document, listed without any script from elsewhere (FastAPI's
// Swagger UI would load from a CDN). Text is inserted with textContent only.
"use strict";

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

document.addEventListener("DOMContentLoaded", async () => {
  const root = document.getElementById("paths");
  const spec = await (await fetch("/openapi.json")).json();
  const schemas = (spec.components && spec.components.schemas) || {};
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      root.append(element("h2", method.toUpperCase() + " " + path));
      if (operation.summary) root.append(element("p", operation.summary, "muted"));
      const body = operation.requestBody && operation.requestBody.content["application/json"];
      if (body) {
        const ref = body.schema.$ref || "";
        const schema = schemas[ref.split("/").pop()] || body.schema;
        root.append(element("pre", JSON.stringify(schema, null, 2)));
      }
    }
  }
});
