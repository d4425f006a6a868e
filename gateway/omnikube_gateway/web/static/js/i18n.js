// The pages in English or Chinese (中文). The pages are written in English; in Chinese, every text
// node and every title / placeholder / aria-label whose English is known is shown translated, also
// the ones the scripts write later (a MutationObserver), so switching needs no reload and no
// string stays behind because a script set it after load. What users and the model wrote (chat
// bubbles, transcript lines, form values) is never touched.
//
// Choice: ?lang=zh|en, else this browser's last choice, else the gateway's `default_lang`
// (GET /api/frontend_defaults, `--lang`), else the browser's language.

const KEY = "omnikube.lang";
const ATTRIBUTES = ["title", "placeholder", "aria-label"];
const UNTOUCHED = ".msg, .ai, .user, textarea, input, select option[value^='upload:'], [data-no-i18n]";

const ZH = {
  // header, home
  Home: "首页", Admin: "管理", "Turn-based Chat": "轮次对话", "Omni Full-Duplex": "全模态全双工",
  "Audio Full-Duplex": "语音全双工", "Half-Duplex Audio": "半双工语音", "Choose Mode": "选择模式",
  "Recent Sessions": "最近的会话", "(only visible to you)": "（仅你可见）", "About MiniCPM-o 4.5": "关于 MiniCPM-o 4.5",
  "MiniCPMO45 — Multimodal Inference Service": "MiniCPMO45 — 多模态推理服务", "Also:": "另有：",
  "a hands-free half-duplex voice call": "免手持的半双工语音通话", ", where the server hears when you stop talking.": "，由服务器判断你何时说完。",
  "Multi-turn chat with text, images and voice; streamed text and speech.": "多轮对话，支持文字、图片和语音；文字与语音流式输出。",
  "Camera and voice, full duplex: the model sees and talks while you do.": "摄像头加语音的全双工：你说话时模型也能看、能说。",
  "Voice only, full duplex: a natural phone-call style conversation.": "纯语音全双工：像打电话一样自然地交谈。",
  "An omni model that hears, sees and speaks at once: turn-based multimodal chat, and full-duplex voice or camera calls in which the model decides every second whether to listen or to speak. Omnikube runs one worker per GPU behind this gateway, which queues users when every worker is busy and tells them how long the wait is.":
    "一个能同时听、看、说的全模态模型：轮次多模态对话，以及语音或视频的全双工通话，模型每秒决定是听还是说。Omnikube 在这个网关后面每块 GPU 运行一个工作进程；所有工作进程都忙时，网关让用户排队并告知预计等待时间。",
  Offline: "离线",
  // common controls
  Start: "开始", Stop: "停止", "■ Stop": "■ 停止", Pause: "暂停", Resume: "继续", Cancel: "取消", Send: "发送",
  Clear: "清空", Close: "关闭", Share: "分享", "Share…": "分享…", Settings: "设置", Options: "选项", Session: "会话",
  Conversation: "对话", "System prompt": "系统提示词", "Reset settings": "恢复默认设置",
  "Forget the settings this browser remembers for this page": "清除本浏览器为此页面记住的设置",
  "New conversation": "新对话", "Export .msgpack": "导出 .msgpack", Message: "消息",
  "Download this conversation (text, images, audio, spoken answers) as MessagePack": "以 MessagePack 格式下载此对话（文字、图片、音频和语音回复）",
  "Leave queue": "离开队列", "Share conversation": "分享对话", "Anyone with the link can replay this recording.": "任何拿到链接的人都可以回放这段录音。",
  "Comment (optional)": "备注（可选）", "Include my recording of this call": "附上我在浏览器里录的这次通话",
  "Link copied: ": "链接已复制：", "Copy this link: ": "复制此链接：",
  // options
  Streaming: "流式输出", "Voice response": "语音回复", "new tokens": "新 token 数", len_pen: "长度惩罚",
  "Max tokens": "最大 token 数", "Length penalty": "长度惩罚", Temperature: "温度", "Timeout (s)": "超时（秒）",
  "VAD threshold": "VAD 阈值", "Min silence (ms)": "最短静音（毫秒）", "Voice detection and generation": "语音检测与生成",
  "Higher = needs louder speech": "越高越需要大声说话", "Silence that ends your turn": "多长的静音算你说完",
  "Higher value = longer responses": "数值越大，回复越长", ">1 = longer answers": ">1 回复更长",
  "Spoken answers avoid Markdown and special characters": "语音回复会避免 Markdown 和特殊字符",
  "Session settings": "会话设置", "Delay (ms)": "延迟（毫秒）", MaxKV: "最大 KV",
  "Buffer before the first chunk of each answer plays; higher is smoother": "每段回复开始播放前的缓冲；越大越流畅",
  "Stop the session when the model's context reaches this many tokens": "模型上下文达到这么多 token 时结束会话",
  "Force listen": "强制聆听", "Hold the model in listening mode (it will not speak)": "让模型保持聆听（它不会说话）",
  Mirror: "镜像", "HD vision": "高清视觉", "Frame width": "画面宽度", "Flip camera": "切换摄像头", "Full screen": "全屏",
  Subtitles: "字幕", "Switch between the front and the back camera": "在前置和后置摄像头之间切换",
  "The camera and the subtitles full screen": "全屏显示画面和字幕", "The model's words over the picture": "在画面上显示模型说的话",
  "2 slices per frame: sharper vision, about +100 ms per step": "每帧 2 个切片：视觉更清晰，每步约多 100 毫秒",
  "Frames are scaled down to this width before upload": "画面上传前缩小到这个宽度",
  Input: "输入", Microphone: "麦克风", File: "文件", Speaker: "扬声器", Camera: "摄像头", "System default": "系统默认",
  "Input file": "输入文件",
  "What the model hears: your microphone, or an audio (or, on the omni page, video) file played as a microphone would":
    "模型听到的内容：你的麦克风，或像麦克风一样播放的音频文件（全模态页面也可以是视频文件）",
  "A new microphone or camera is used from the next start": "新选的麦克风或摄像头从下次开始时生效",
  Rec: "录制", "Download Rec": "下载录音", "⚙ Rec format": "⚙ 录制格式", Format: "格式", Bitrate: "码率",
  "How the omni page records the call": "全模态页面如何录制通话", Auto: "自动", "Audio only (WebM Opus)": "仅音频（WebM Opus）",
  "Subtitles in the recording": "录制中带字幕", "Draw the model's words into the recorded picture": "把模型说的话画进录制的画面",
  "Record this call in the browser: a video of the picture with the subtitles, left your microphone, right the model":
    "在浏览器里录制这次通话：带字幕的画面视频，左声道是你的麦克风，右声道是模型",
  "Record this call in the browser: a stereo WAV, left your microphone, right the model": "在浏览器里录制这次通话：立体声 WAV，左声道是你的麦克风，右声道是模型",
  // voices
  "System prompt voice (reference audio)": "系统提示词音色（参考音频）", "LLM voice (the system prompt's reference audio)": "LLM 音色（系统提示词的参考音频）",
  "TTS voice (voice cloning)": "TTS 音色（声音克隆）", "Reference voice (voice cloning)": "参考音色（声音克隆）",
  "Same as the LLM voice": "与 LLM 音色相同", "Same as the system prompt's voice": "与系统提示词音色相同",
  "Server default voice": "服务器默认音色", "Upload voice…": "上传音色…", "Loading preset voice…": "正在加载预设音色…",
  "This preset has no voice; the worker default is used.": "此预设没有音色，将使用工作进程的默认音色。",
  // system content editor
  "More system content (sent in this order, after the prompt and its voice)": "更多系统内容（按此顺序发送，在提示词及其音色之后）",
  "+ Text": "+ 文字", "+ Audio…": "+ 音频…", "System content text": "系统内容文字", "System content audio": "系统内容音频",
  "Move up": "上移", "Move down": "下移", Delete: "删除",
  // chat page
  "Attach file": "添加文件", "Attach files": "添加文件", "Attach an image, audio or video file": "添加图片、音频或视频文件",
  "Record audio": "录音", "Record audio (Space key)": "录音（空格键）", "Type or press Space to record…": "输入文字，或按空格键录音…",
  "Enter sends, Shift+Enter adds a line. Hold Space (in an empty box) or the 🎤 button to talk; tap to toggle; Esc cancels a recording.":
    "回车发送，Shift+回车换行。在空输入框中按住空格键或 🎤 按钮说话；轻点切换；Esc 取消录音。",
  "✎ Edit": "✎ 编辑", "Edit this message and send it again: the conversation after it is dropped": "编辑这条消息并重新发送：它之后的对话会被丢弃",
  "Stop the answer in progress before editing a message.": "请先停止正在生成的回复，再编辑消息。",
  // duplex and half-duplex pages
  "Full-Duplex": "全双工", "Full duplex: the model may speak while you speak. Headphones avoid echo.": "全双工：你说话时模型也可能说话。戴耳机可以避免回声。",
  "A hands-free voice call: speak, pause, and the model answers once the server hears you stop. The microphone is muted while the model speaks.":
    "免手持语音通话：说话、停顿，服务器听到你停下后模型就会回答。模型说话时麦克风静音。",
  Stopped: "已停止", "Connecting…": "连接中…", Queued: "排队中", "Preparing…": "准备中…", LIVE: "通话中",
  "Pausing…": "暂停中…", Paused: "已暂停", "Stopping…": "停止中…", "Resuming…": "恢复中…", Listening: "聆听中",
  "AI speaking": "AI 说话中", "You are speaking…": "你正在说话…", Expired: "已到期",
  Resumed: "已恢复", "Session stopped": "会话已停止", "Session active — speak now": "会话已开始——请说话",
  "Session active — speak, then pause to let the model answer": "会话已开始——说话后停顿，让模型回答",
  "— end of turn —": "—— 本轮结束 ——", "Left the queue": "已离开队列", Cancelled: "已取消",
  "Timeout: the session reached its time limit; start again to continue.": "超时：会话已到时间上限，请重新开始。",
  State: "状态", SID: "会话", Model: "模型", Chunks: "块数", KV: "KV", Vision: "视觉", Infer: "推理", Latency: "延迟",
  TTFS: "首声时间", Drift: "漂移", Ahead: "缓冲", Speaking: "说话", Std: "标准", recording: "录音",
  // admin page
  "MiniCPM-o 4.5 · Admin": "MiniCPM-o 4.5 · 管理", "Omnikube Admin Dashboard": "Omnikube 管理面板", "Loading…": "加载中…",
  Workers: "工作进程", Queue: "队列", "ETA settings": "预计等待时间设置", Apps: "应用", "Recent sessions": "最近的会话",
  "Reference audio library": "参考音频库", Worker: "工作进程", Address: "地址", Task: "任务", Duration: "时长",
  Requests: "请求数", Position: "位置", Type: "类型", ETA: "预计等待", Waiting: "已等待", Ticket: "票号", Save: "保存",
  "Session id": "会话 ID", Show: "显示", Created: "创建时间", Idle: "空闲", Busy: "忙碌", "No workers": "没有工作进程",
  "Queue empty": "队列为空", "Chat (s)": "对话（秒）", "Chat socket (s)": "对话连接（秒）", "Half duplex (s)": "半双工（秒）",
  "Audio duplex (s)": "语音全双工（秒）", "Omni duplex (s)": "全模态全双工（秒）", "EMA α (0–1)": "EMA α（0–1）",
  "No EMA data yet": "还没有 EMA 数据", Enabled: "已启用", Disabled: "已停用", "from the server": "来自服务器",
  "recent sessions of this browser (the server offers no listing)": "本浏览器最近的会话（服务器不提供列表）",
  "▶ Play": "▶ 播放", "No sessions yet": "还没有会话", "Stereo: L = user, R = AI": "立体声：左 = 用户，右 = AI",
  "No turns recorded": "没有记录的轮次", "No uploaded reference audio": "没有上传的参考音频",
  // session viewer
  "Session Viewer": "会话回放", "⬇ Download": "⬇ 下载", Config: "配置", "Frontend recording (uploaded by the user)": "浏览器录制（用户上传）",
  "Recorded in the browser: L = user, R = AI": "在浏览器中录制：左 = 用户，右 = AI", Replay: "回放",
  "Replay not available": "没有回放", Timeline: "时间线", "Play the replay from this chunk": "从这一块开始播放回放",
  User: "用户", "AI audio": "AI 音频", "Recording data not available (session may still be active)": "录音数据不可用（会话可能仍在进行）",
  // session states, as the metrics grid shows them
  active: "进行中", stopped: "已停止", connecting: "连接中", queued: "排队中", preparing: "准备中",
  pausing: "暂停中", paused: "已暂停", stopping: "停止中", listening: "聆听中", generating: "生成中",
};

const PATTERNS = [
  [/^Workers: (\d+)\/(\d+) idle( \| Queue: (\d+))?$/, (m) => `工作进程：${m[1]}/${m[2]} 空闲${m[4] ? ` | 排队：${m[4]}` : ""}`],
  [/^Queue (\S+), ~(.+)$/, (m) => `排队 ${m[1]}，约 ${m[2]}`],
  [/^Queue (\S+), overtime \+(.+)$/, (m) => `排队 ${m[1]}，已超出 ${m[2]}`],
  [/^Waiting for a free worker, ~(.+)$/, (m) => `等待空闲的工作进程，约 ${m[1]}`],
  [/^Turns: (\d+)$/, (m) => `轮次：${m[1]}`],
  [/^(\d+:\d\d) left$/, (m) => `剩余 ${m[1]}`],
  [/^Prepared \((.+) tokens\)( —)?$/, (m) => `已就绪（${m[1]} 个 token）${m[2] ? "——" : ""}`],
  [/^Default voice not loaded \((.+)\); the worker will use its own\.$/, (m) => `默认音色未加载（${m[1]}），将使用工作进程自己的音色。`],
  [/^Queued (\d+)\/(\S+), about ~(\d+)s$/, (m) => `排队 ${m[1]}/${m[2]}，约 ${m[3]} 秒`],
  [/^Default: (.+)$/, (m) => `默认：${m[1]}`],
  [/^Preset: (.+)$/, (m) => `预设：${m[1]}`],
  [/^Error: (.+)$/, (m) => `错误：${m[1]}`],
  [/^(.+) – MiniCPM-o 4\.5$/, (m) => `${translate(m[1])} – MiniCPM-o 4.5`],
  // admin page (what the captures hold is data and stays as it is)
  [/^Updated (.+)$/, (m) => `更新于 ${m[1]}`],
  [/^Saved at (.+)$/, (m) => `已保存于 ${m[1]}`],
  [/^Save failed: (.+)$/, (m) => `保存失败：${m[1]}`],
  [/^Refresh failed: (.+)$/, (m) => `刷新失败：${m[1]}`],
  [/^Cannot read ETA settings: (.+)$/, (m) => `无法读取预计等待时间设置：${m[1]}`],
  [/^(\S+) \(~(\S+) left\)$/, (m) => `${m[1]}（剩余约 ${m[2]}）`],
  [/^EMA (.+)$/, (m) => `EMA ${m[1].replace(/\((\d+) samples\)/g, "（$1 个样本）")}`],
  [/^Enable (.+)$/, (m) => `启用 ${m[1]}`],
  [/^Loading (\S+)…$/, (m) => `正在加载 ${m[1]}…`],
  [/^Recording (\S+)$/, (m) => `录音 ${m[1]}`],
  [/^(\d+) chunks\. AI said: (.*)$/s, (m) => `${m[1]} 块。AI 说：${m[2] === "(nothing)" ? "（无）" : m[2]}`],
  [/^Recording not available \((.+)\); the session may still be active\.$/, (m) => `录音不可用（${m[1]}），会话可能仍在进行。`],
  [/^(Apps not available|Not available): (.+)$/, (m) => `不可用：${m[2]}`],
  // session viewer
  [/^(.+) — Session Viewer$/, (m) => `${m[1]} — 会话回放`],
  [/^Session not found: (.+)$/, (m) => `找不到会话：${m[1]}`],
  [/^ID: (.+)$/, (m) => `ID：${m[1]}`],
  [/^Created: (.+)$/, (m) => `创建时间：${m[1]}`],
  [/^Duration: active$/, () => "时长：进行中"],
  [/^Duration: (.+)$/, (m) => `时长：${m[1]}`],
  [/^Worker: GPU (.+)$/, (m) => `工作进程：GPU ${m[1]}`],
  [/^Comment: (.+)$/s, (m) => `备注：${m[1]}`],
];

let lang = "en";
// text node -> {en, shown}; element -> {attribute: {en, shown}}. `shown` tells the page's own
// writes (anything else) from ours.
const originals = new WeakMap();
let observer = null;

/** The page's language now: "en" or "zh". */
export function currentLang() {
  return lang;
}

export function translate(text) {
  if (lang !== "zh") return text;
  const trimmed = text.trim();
  if (!trimmed) return text;
  let out = ZH[trimmed];
  if (out === undefined) {
    for (const [pattern, build] of PATTERNS) {
      const match = trimmed.match(pattern);
      if (match) {
        out = build(match);
        break;
      }
    }
  }
  return out === undefined ? text : text.replace(trimmed, out);
}

function untouched(element) {
  if (!element) return true;
  if (element.closest("button")) return false; // a control, even inside a message
  return element.closest(UNTOUCHED) !== null;
}

/** What to show for `current`, given what we showed last (`known`); records the English. */
function shownFor(known, current) {
  const en = known === undefined || current !== known.shown ? current : known.en;
  return { en, shown: translate(en) };
}

function textNode(node) {
  if (untouched(node.parentElement)) return;
  const next = shownFor(originals.get(node), node.data);
  originals.set(node, next);
  if (node.data !== next.shown) node.data = next.shown;
}

function attributes(element) {
  const own = element.tagName === "TEXTAREA" || element.tagName === "INPUT"; // their labels, not their values
  if (!own && untouched(element)) return;
  const saved = originals.get(element) ?? {};
  for (const name of ATTRIBUTES) {
    const value = element.getAttribute(name);
    if (value === null) continue;
    saved[name] = shownFor(saved[name], value);
    if (value !== saved[name].shown) element.setAttribute(name, saved[name].shown);
  }
  originals.set(element, saved);
}

function walk(root) {
  if (root.nodeType === Node.TEXT_NODE) return textNode(root);
  if (root.nodeType !== Node.ELEMENT_NODE) return;
  attributes(root);
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT | NodeFilter.SHOW_ELEMENT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.nodeType === Node.TEXT_NODE) textNode(node);
    else attributes(node);
  }
}

/** The window's title, also when a page sets it later (the viewer names the session). */
function retitle() {
  const title = shownFor(originals.get(document), document.title);
  originals.set(document, title);
  if (document.title !== title.shown) document.title = title.shown;
}

function apply() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.dispatchEvent(new CustomEvent("omnikube:lang", { detail: lang }));
  retitle();
  walk(document.body);
}

/** Show the page in `next` ("en" | "zh") from now on, and remember the choice in this browser. */
export function setLang(next) {
  lang = next === "zh" ? "zh" : "en";
  try {
    localStorage.setItem(KEY, lang);
  } catch {
    // storage disabled: the choice lasts for this page
  }
  apply();
}

function chosen() {
  const asked = new URLSearchParams(location.search).get("lang");
  let stored = null;
  try {
    stored = localStorage.getItem(KEY);
  } catch {
    stored = null;
  }
  return [asked, stored].find((l) => l === "zh" || l === "en") ?? null;
}

/** The gateway's default_lang arrived: it applies unless the URL or this browser chose. */
export function serverDefaultLang(serverDefault) {
  if (chosen() || (serverDefault !== "zh" && serverDefault !== "en") || serverDefault === lang) return;
  lang = serverDefault;
  apply();
}

/** Start translating this page, in the chosen language or the browser's. */
export function startI18n() {
  const browser = (navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en";
  lang = chosen() ?? browser;
  if (!observer) {
    const titleElement = document.querySelector("title");
    observer = new MutationObserver((records) => {
      if (lang !== "zh") return;
      for (const record of records) {
        if (titleElement?.contains(record.target)) retitle();
        else if (record.type === "characterData") textNode(record.target);
        else if (record.type === "attributes") attributes(record.target);
        else record.addedNodes.forEach(walk);
      }
    });
    observer.observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ATTRIBUTES });
    if (titleElement) observer.observe(titleElement, { subtree: true, childList: true, characterData: true });
  }
  apply();
}
