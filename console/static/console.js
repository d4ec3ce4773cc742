// The console's script: no inline script anywhere (CSP script-src 'self'); pages mark what they
// need with data- attributes and this file wires it up.
"use strict";

(function () {
  // -- playback on the recording page --------------------------------------------------------------
  const section = document.getElementById("playback");
  if (!section) return;
  const purpose = document.getElementById("purpose");
  const button = document.getElementById("play");
  const player = document.getElementById("player");
  const canvas = document.getElementById("waveform");
  const integrity = document.getElementById("integrity");
  const problem = document.getElementById("play-error");
  if (!purpose || !button || !player) return;
  let peaks = null;

  function say(text) {
    problem.textContent = text;
    problem.hidden = !text;
  }

  purpose.addEventListener("change", function () {
    button.disabled = !purpose.value;
    say("");
  });

  button.addEventListener("click", async function () {
    if (!purpose.value) { say(section.dataset.needPurpose); return; }
    button.disabled = true;
    say("");
    let answer;
    try {
      const reply = await fetch(section.dataset.play, {
        method: "POST", credentials: "same-origin", cache: "no-store",
        headers: {"Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": section.dataset.csrf},
        body: new URLSearchParams({purpose: purpose.value}).toString(),
      });
      answer = await reply.json().catch(function () { return {}; });
      if (!reply.ok) throw new Error(answer.error || section.dataset.failed);
    } catch (err) {
      say(err.message || section.dataset.failed);
      button.disabled = false;
      return;
    }
    player.src = answer.audio;
    player.hidden = false;
    player.play().catch(function () { /* the user presses play on the control */ });
    if (integrity) checkIntegrity(answer.check, answer.sha256);
    if (canvas) drawWaveform(answer.waveform);
    button.disabled = false;
  });

  // -- the integrity check the daemon runs in the background ---------------------------------------
  async function checkIntegrity(url, sha256) {
    const state = integrity.querySelector(".state");
    const sha = integrity.querySelector(".sha");
    state.textContent = section.dataset.checking;
    integrity.className = "checking";
    for (let i = 0; i < 600; i++) {
      try {
        const reply = await fetch(url, {credentials: "same-origin", cache: "no-store"});
        const answer = await reply.json();
        if (!reply.ok) { state.textContent = answer.error || ""; integrity.className = "failed"; return; }
        if (answer.state && answer.state !== "checking") {
          state.textContent = answer.text;
          sha.textContent = answer.sha256 || sha256 || integrity.dataset.sha256;
          integrity.className = answer.state;
          return;
        }
      } catch (err) { /* try again */ }
      await new Promise(function (done) { setTimeout(done, 1000); });
    }
  }

  // -- the waveform: both channels, caller above, contact centre below -----------------------------
  function channelsOf(data) {
    // [{min: [...], max: [...]}, ...] per channel (or {channels: ...}, or [[min, max], ...] pairs)
    let channels = data.channels || data.peaks || data;
    if (!Array.isArray(channels)) return [];
    return channels.slice(0, 2).map(function (c) {
      if (Array.isArray(c)) return {min: c.map(function (p) { return p[0]; }), max: c.map(function (p) { return p[1]; })};
      return {min: c.min || [], max: c.max || []};
    });
  }

  async function drawWaveform(url) {
    try {
      const reply = await fetch(url, {credentials: "same-origin", cache: "no-store"});
      if (!reply.ok) return;
      const data = await reply.json();
      peaks = channelsOf(data);
      peaks.full = data.full_scale || 32768;
      paint();
    } catch (err) { /* no waveform: the audio still plays */ }
  }

  function paint() {
    if (!peaks) return;
    const g = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, half = h / 2;
    g.clearRect(0, 0, w, h);
    const labels = [section.dataset.caller, section.dataset.centre];
    peaks.forEach(function (c, i) {
      const top = i * half, mid = top + half / 2, n = Math.max(c.max.length, 1);
      g.fillStyle = i === 0 ? "#1f4e79" : "#7a3e00";
      for (let x = 0; x < c.max.length; x++) {
        const hi = c.max[x] / peaks.full, lo = c.min[x] / peaks.full;
        const px = x * w / n, y1 = mid - hi * half / 2, y2 = mid - lo * half / 2;
        g.fillRect(px, y1, Math.max(w / n, 1), Math.max(y2 - y1, 1));
      }
      const text = labels[i] || "";
      g.font = "12px sans-serif";
      g.fillStyle = "rgba(255, 255, 255, 0.85)";
      g.fillRect(0, top, g.measureText(text).width + 8, 18);
      g.fillStyle = "#222";
      g.fillText(text, 4, top + 13);
    });
    g.strokeStyle = "#ccc";
    g.beginPath(); g.moveTo(0, half); g.lineTo(w, half); g.stroke();
    if (player.duration > 0) {
      const x = player.currentTime / player.duration * w;
      g.strokeStyle = "#c00";
      g.beginPath(); g.moveTo(x, 0); g.lineTo(x, h); g.stroke();
    }
  }

  player.addEventListener("timeupdate", paint);
  if (canvas) {
    canvas.addEventListener("click", function (e) {  // click the waveform to seek there
      if (!(player.duration > 0)) return;
      const box = canvas.getBoundingClientRect();
      player.currentTime = (e.clientX - box.left) / box.width * player.duration;
    });
  }
})();
