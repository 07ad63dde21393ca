// Live pages: run `refresh` now and every `ms` while the tab is visible, never two at a time.
export function poll(refresh, ms) {
  let timer = null;
  let stopped = false;
  async function tick() {
    if (stopped) return;
    if (!document.hidden) {
      try {
        await refresh();
      } catch (error) {
        console.error(error);
      }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  }
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
