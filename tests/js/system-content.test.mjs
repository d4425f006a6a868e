// Unit tests of the system content list the chat and half-duplex pages send (static/js/system-content.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { systemContent } from "../../gateway/omnikube_gateway/web/static/js/system-content.js";

test("the prompt, its voice, then the editor's items, in order", () => {
  const extra = [{ type: "text", text: "B" }, { type: "audio", data: "QUJD" }];
  assert.deepEqual(systemContent("A", "dm9pY2U=", extra),
    [{ type: "text", text: "A" }, { type: "audio", data: "dm9pY2U=" }, ...extra]);
});

test("an empty prompt or no voice leaves no item behind", () => {
  assert.deepEqual(systemContent("", null, [{ type: "text", text: "B" }]), [{ type: "text", text: "B" }]);
  assert.deepEqual(systemContent("", null), []);
});
