// The official KurrentDB Node.js client against eskit grpc: appends with expected states,
// reads forwards and backwards, a catch-up subscription (catching up, then live) and a
// persistent subscription with ack. Prints one JSON line of what it saw; the Python test
// (tests/kurrentdb/test_node.py) checks it. Usage: node clients.mjs CONNECTION_STRING STREAM
import {
  BACKWARDS,
  END,
  FORWARDS,
  KurrentDBClient,
  NO_STREAM,
  START,
  WrongExpectedVersionError,
  jsonEvent,
  persistentSubscriptionToStreamSettingsFromDefaults,
} from "@kurrent/kurrentdb-client";

const [connectionString, stream] = process.argv.slice(2);
const client = KurrentDBClient.connectionString(connectionString);
const seen = {};

const made = (type, n) => jsonEvent({ type, data: { n } });
const first = await client.appendToStream(stream, [made("Opened", 1), made("Changed", 2)], {
  streamState: NO_STREAM,
});
seen.appended = Number(first.nextExpectedRevision);
try {
  await client.appendToStream(stream, made("Late", 0), { streamState: NO_STREAM });
  seen.wrongVersion = null;
} catch (error) {
  seen.wrongVersion = error instanceof WrongExpectedVersionError ? String(error.actualState) : String(error);
}
await client.appendToStream(stream, made("Changed", 3), { streamState: first.nextExpectedRevision });

seen.forwards = [];
for await (const { event } of client.readStream(stream, { direction: FORWARDS, fromRevision: START })) {
  seen.forwards.push([event.type, event.data.n, Number(event.revision)]);
}
seen.backwards = [];
for await (const { event } of client.readStream(stream, { direction: BACKWARDS, fromRevision: END, maxCount: 2 })) {
  seen.backwards.push(event.type);
}
seen.allBackwards = [];
for await (const { event } of client.readAll({ direction: BACKWARDS, fromPosition: END, maxCount: 3 })) {
  if (event) seen.allBackwards.push(event.streamId);
}

seen.subscribed = [];
const subscription = client.subscribeToStream(stream, { fromRevision: START });
for await (const { event } of subscription) {
  seen.subscribed.push(event.type);
  if (seen.subscribed.length === 3) {
    await client.appendToStream(stream, made("Live", 4));
  }
  if (event.type === "Live") break;
}
await subscription.unsubscribe();

const group = `node-${stream}`;
await client.createPersistentSubscriptionToStream(
  stream,
  group,
  persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: START }),
);
seen.persistent = [];
const persistent = client.subscribeToPersistentSubscriptionToStream(stream, group);
for await (const resolved of persistent) {
  seen.persistent.push([resolved.event.type, resolved.retryCount]);
  await persistent.ack(resolved);
  if (seen.persistent.length === 4) break;
}
await persistent.unsubscribe();
const info = await client.getPersistentSubscriptionToStreamInfo(stream, group);
seen.groupInfo = [info.groupName, info.eventSource];

await client.dispose();
console.log(JSON.stringify(seen));
