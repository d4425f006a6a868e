/** Home page: one card per enabled mode (GET /api/apps) and this browser's recent sessions. */
import { $, api, buildNav, clearRecentSessions, el, recentSessions, statusPill } from "./common.js";

const MODES = {
  turnbased: { icon: "💬", desc: "Multi-turn chat with text, images and voice; streamed text and speech." },
  omni: { icon: "🎥", desc: "Camera and voice, full duplex: the model sees and talks while you do." },
  audio_duplex: { icon: "🎤", desc: "Voice only, full duplex: a natural phone-call style conversation." },
};
const FALLBACK_APPS = [
  { app_id: "turnbased", name: "Turn-based Chat", route: "/turnbased" },
  { app_id: "omni", name: "Omni Full-Duplex", route: "/omni" },
  { app_id: "audio_duplex", name: "Audio Full-Duplex", route: "/audio_duplex" },
];

async function renderCards() {
  let apps = FALLBACK_APPS;
  try {
    apps = (await api("api/apps")).apps;
  } catch {
    /* gateway without the apps registry: show every mode */
  }
  const cards = apps
    .filter((app) => MODES[app.app_id])
    .map((app) =>
      el("a", { class: "card", href: app.route.replace(/^\//, ""), dataset: { app: app.app_id } },
        el("div", { class: "icon" }, MODES[app.app_id].icon),
        el("div", { class: "name" }, app.name),
        el("div", { class: "desc" }, MODES[app.app_id].desc),
        el("span", { class: "enter" }, "Enter →")));
  $("#cards").replaceChildren(...cards);
}

function renderRecent() {
  const list = recentSessions();
  $("#recent").hidden = list.length === 0;
  $("#recent-rows").replaceChildren(
    ...list.map((s) => {
      const d = new Date(s.savedAt);
      const when = `${d.getMonth() + 1}/${d.getDate()} ${d.getHours()}:${String(d.getMinutes()).padStart(2, "0")}`;
      return el("tr", {},
        el("td", {}, el("span", { class: "badge" }, String(s.appType || "").replace("_", " "))),
        el("td", {}, el("a", { href: `s/${encodeURIComponent(s.id)}`, target: "_blank" }, s.id)),
        el("td", { class: "muted" }, when));
    }));
}

$("#recent-clear").addEventListener("click", () => {
  clearRecentSessions();
  renderRecent();
});

buildNav("./");
statusPill(5000);
renderCards();
renderRecent();
