// Runs a name filter's regular expression off the page's thread, so that a
// catastrophic pattern (`(a+)+b` over a long name) can be stopped: match.js
// terminates this worker when it overruns its time budget.

self.onmessage = (event) => {
  const { id, source, flags, names } = event.data;
  const re = new RegExp(source, flags);
  const matched = [];
  for (let i = 0; i < names.length; i++) if (re.test(names[i])) matched.push(i);
  self.postMessage({ id, matched });
};
