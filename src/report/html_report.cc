#include "epochal/report/html_report.h"

#include "epochal/report/svg_plot.h"

namespace epochal::report {
namespace assets {
// Defined in the generated run_view_assets.cc (cmake/EmbedText.cmake).
std::string_view RunViewJs();
std::string_view RunViewCss();
std::string_view LivePage();
}  // namespace assets

std::string_view RunViewScript() { return assets::RunViewJs(); }
std::string_view RunViewStyle() { return assets::RunViewCss(); }
std::string_view LivePageHtml() { return assets::LivePage(); }

std::string JsonForScriptElement(std::string_view json) {
  std::string out;
  out.reserve(json.size());
  for (char c : json) {
    if (c == '<') {
      out += "\\u003c";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string HtmlReport(std::string_view run_document_json, std::string_view title) {
  std::string out;
  out.reserve(run_document_json.size() + RunViewScript().size() + 4096);
  out += "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>";
  out += svg::EscapeXml(title);
  out += "</title>\n<style>\n";
  out += RunViewStyle();
  out += "</style>\n</head>\n<body>\n<h1>";
  out += svg::EscapeXml(title);
  out +=
      "</h1>\n<div id=\"run\"><p>This report draws its charts with the script inside it; "
      "allow JavaScript for this file.</p></div>\n"
      "<script type=\"application/json\" id=\"run-data\">";
  out += JsonForScriptElement(run_document_json);
  out += "</script>\n<script>\n";
  // The renderer's source contains no "</script": it is plain JavaScript we ship.
  out += RunViewScript();
  out +=
      "\n</script>\n<script>\nwindow.EpochalRunView.render(JSON.parse("
      "document.getElementById('run-data').textContent), document.getElementById('run'), "
      "'report');\n</script>\n</body>\n</html>\n";
  return out;
}

}  // namespace epochal::report
