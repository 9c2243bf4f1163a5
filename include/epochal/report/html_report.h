// report.html and the live page: one renderer (src/report/assets/run_view.js) draws a run
// document (run_document.h) into SVG and HTML, in the browser. report.html inlines the
// renderer, its style sheet and the document, so it opens from disk with no server and
// no network; the live page loads the same renderer from the dashboard server.
// Thread safety: the functions are reentrant.
#pragma once

#include <string>
#include <string_view>

namespace epochal::report {

// The embedded assets, byte for byte (src/report/assets/).
std::string_view RunViewScript();
std::string_view RunViewStyle();
std::string_view LivePageHtml();

// The self-contained report page for `run_document_json` (RunDocumentJson's output).
std::string HtmlReport(std::string_view run_document_json, std::string_view title);

// `json` made safe inside an HTML <script> element: every '<' becomes "\u003c" (the same
// JSON, since '<' occurs only inside strings), so no "</script>" can end the element.
std::string JsonForScriptElement(std::string_view json);

}  // namespace epochal::report
