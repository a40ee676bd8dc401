// Starts Swagger UI on /docs (FastAPI's default settings) from a file, not an inline script, so that a
// Content-Security-Policy without 'unsafe-inline' allows it. The OpenAPI URL comes from a data attribute.
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  if (!root || typeof SwaggerUIBundle === "undefined") return;
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,  // no badge from validator.swagger.io: nothing leaves this origin
    presets: [SwaggerUIBundle.presets.apis],  // FastAPI also names SwaggerUIStandalonePreset: not in this bundle
  });
})();
