// The player page: shaka-player with its own controls plays the video's HLS (or, with ?format=dash,
// DASH) stream and shows the storyboard's tiles over the seek bar. window.vidpipePlayer is the
// shaka.Player, for the browser tests and for anyone debugging in the console.
async function startPlayer() {
  const sources = JSON.parse(document.getElementById("sources").textContent, (name, value) =>
    typeof value === "string" ? new URL(value, location.href).href : value);  // shaka wants absolute URLs
  const video = document.getElementById("video");
  const player = video.ui.getControls().getPlayer();
  window.vidpipePlayer = player;
  player.addEventListener("error", (event) => showError(event.detail));
  const format = new URLSearchParams(location.search).get("format") === "dash" ? "dash" : "hls";
  const stream = sources[format] || sources.hls || sources.dash;
  try {
    if (stream) {
      await player.load(stream);
    } else if (sources.files.length) {
      await player.load(sources.files[0]);  // no adaptive stream (a VP9-only ladder): the first file
    }
    if (sources.storyboard) {
      await player.addThumbnailsTrack(sources.storyboard, "text/vtt");
    }
    document.body.dataset.player = "ready";
  } catch (error) {
    showError(error);
  }
}

function showError(error) {
  document.body.dataset.player = "error";
  const message = document.createElement("p");
  message.className = "error";
  message.textContent = `The video could not be played (shaka-player error ${error.code || error}).`;
  document.querySelector("main").append(message);
}

document.addEventListener("shaka-ui-loaded", startPlayer);
document.addEventListener("shaka-ui-load-failed", () => showError("this browser cannot play it"));
