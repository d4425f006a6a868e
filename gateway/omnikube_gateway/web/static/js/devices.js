// Which microphone, speaker and camera a page uses: one select per kind, remembered in this browser
// (the same hardware serves every page). "System default" is the empty id. A remembered device
// that is unplugged shows as the default and comes back when it is plugged in again.

import { el } from "./common.js";

const KEY = "omnikube.devices";
const LABELS = { audioinput: "Microphone", audiooutput: "Speaker", videoinput: "Camera" };

function remembered() {
  try {
    return JSON.parse(localStorage.getItem(KEY) || "{}") || {};
  } catch {
    return {};
  }
}

export class DevicePicker {
  /**
   * @param {HTMLElement} container
   * @param {{kinds?: string[], onChange?: (kind: string, deviceId: string) => void}} options
   */
  constructor(container, { kinds = ["audioinput", "audiooutput"], onChange = () => {} } = {}) {
    this.onChange = onChange;
    this.selects = {};
    // Browsers without AudioContext.setSinkId play on the default output only.
    const kinds_ = kinds.filter((k) => k !== "audiooutput" || typeof AudioContext.prototype.setSinkId === "function");
    for (const kind of kinds_) {
      const select = el("select", { id: `device-${kind}`, "aria-label": LABELS[kind] });
      select.addEventListener("change", () => this.choose(kind, select.value));
      this.selects[kind] = select;
      container.append(el("label", { class: "inline" }, `${LABELS[kind]} `, select));
    }
    if (!navigator.mediaDevices?.enumerateDevices) {
      container.hidden = true;
      return;
    }
    navigator.mediaDevices.addEventListener("devicechange", () => this.refresh());
    this.ready = this.refresh();
  }

  /** The chosen device's id for `kind`, or "" for the system default (also when it is gone). */
  deviceId(kind) {
    const select = this.selects[kind];
    return select ? select.value : "";
  }

  choose(kind, deviceId) {
    const choices = remembered();
    choices[kind] = deviceId;
    try {
      localStorage.setItem(KEY, JSON.stringify(choices));
    } catch {
      // storage disabled: the choice lasts for this page only
    }
    this.onChange(kind, deviceId);
  }

  /** List the devices again (labels appear once the page was allowed a microphone or camera). */
  async refresh() {
    const devices = await navigator.mediaDevices.enumerateDevices();
    const choices = remembered();
    for (const [kind, select] of Object.entries(this.selects)) {
      const own = devices.filter((d) => d.kind === kind && d.deviceId && d.deviceId !== "default");
      const wanted = select.value || choices[kind] || "";
      select.replaceChildren(el("option", { value: "" }, "System default"),
        ...own.map((d, i) => el("option", { value: d.deviceId }, d.label || `${LABELS[kind]} ${i + 1}`)));
      select.value = own.some((d) => d.deviceId === wanted) ? wanted : "";
    }
  }
}

/** A picker whose speaker choice drives `player` (a StreamPlayer), now and whenever it changes. */
export function devicePicker(container, player, kinds = ["audioinput", "audiooutput"]) {
  const picker = new DevicePicker(container, {
    kinds,
    onChange: (kind, deviceId) => {
      if (kind === "audiooutput") player.setSink(deviceId).catch(() => {});
    },
  });
  picker.ready?.then(() => player.setSink(picker.deviceId("audiooutput"))).catch(() => {});
  return picker;
}
