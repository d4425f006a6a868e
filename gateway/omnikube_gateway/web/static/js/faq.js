// The FAQ panel of the user pages: a header button opens a drawer with the page's questions, one
// accordion item per "##" heading (the first open), from static/faq/{lang}/{mode}.md, rendered
// with the vendored `marked`. It follows the language switch.

import { el, httpUrl } from "./common.js";
import { currentLang } from "./i18n.js";

/** `mode`: which static/faq/{lang}/{mode}.md; the button goes after the header's language switch. */
export function faqPanel(mode, anchor = document.querySelector("#lang")) {
  if (!anchor) return;
  const body = el("div", { class: "faq-body" });
  const title = el("h2", {});
  const drawer = el("aside", { id: "faq", class: "faq panel", hidden: true, "data-no-i18n": true, "aria-label": "FAQ" },
    el("div", { class: "row" }, title,
      el("button", { type: "button", class: "faq-close", onclick: () => (drawer.hidden = true) }, "×")),
    body);
  const button = el("button", { type: "button", id: "faq-button", class: "lang", "data-no-i18n": true }, "FAQ");
  let loadedFor = null;

  async function load() {
    const lang = currentLang();
    title.textContent = lang === "zh" ? "常见问题" : "FAQ";
    button.textContent = title.textContent;
    if (drawer.hidden || loadedFor === lang) return;
    loadedFor = lang;
    try {
      const response = await fetch(httpUrl(`static/faq/${lang}/${mode}.md`));
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      const { marked } = await import("./vendor/marked.esm.js");
      body.replaceChildren(...sections(marked, await response.text()));
    } catch (error) {
      loadedFor = null;
      body.replaceChildren(el("p", { class: "error" }, `FAQ load failed: ${error.message}`));
    }
  }

  button.addEventListener("click", () => {
    drawer.hidden = !drawer.hidden;
    load();
  });
  document.addEventListener("omnikube:lang", () => load());
  anchor.after(button);
  document.body.append(drawer);
  load();
}

/** One <details> per "## question", its answer rendered from Markdown (our own files, trusted). */
function sections(marked, markdown) {
  return markdown.split(/^## /m).filter((part) => part.trim()).map((part, index) => {
    const [question, ...answer] = part.split("\n");
    const content = el("div", {});
    content.innerHTML = marked.parse(answer.join("\n"));
    return el("details", { open: index === 0 }, el("summary", {}, question.trim()), content);
  });
}
