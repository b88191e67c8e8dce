// Relay WebSocket – Coach de Llamadas.
//
// Reference peer for the benchmarks: the seed's relay (shared/seeds/003_59440ef5b56b3df8.txt) written the
// straightforward way its README describes it, so that bench/bench_relay.py can measure our hub against it.
//   GET  /health          -> "ok"
//   POST /event           -> JSON body with callId; kept in a backlog of the last 50 per callId and sent to the room
//   WS   /ws?callId=<id>  -> the backlog first, then live events, one JSON text frame each
// Rooms are removed when their last socket closes. PORT (default 7070) and HOST (default: all interfaces).
'use strict';

const http = require('http');
const express = require('express');
const { WebSocketServer, WebSocket } = require('ws');

const PORT = Number(process.env.PORT) || 7070;
const HOST = process.env.HOST || undefined;
const MAX_BACKLOG = 50;

const app = express();
app.use(express.json({ limit: '1mb' }));

// callId -> Set<WebSocket>
const rooms = new Map();
// callId -> last MAX_BACKLOG events, oldest first
const backlog = new Map();

function remember(callId, event) {
  let events = backlog.get(callId);
  if (!events) {
    events = [];
    backlog.set(callId, events);
  }
  events.push(event);
  if (events.length > MAX_BACKLOG) events.shift();
}

function broadcast(callId, event) {
  const room = rooms.get(callId);
  if (!room) return;
  const data = JSON.stringify(event);
  for (const ws of room) {
    if (ws.readyState === WebSocket.OPEN) ws.send(data);
  }
}

app.get('/health', (req, res) => {
  res.send('ok');
});

app.post('/event', (req, res) => {
  const event = req.body;
  if (!event || !event.callId) {
    return res.status(400).json({ error: 'callId requerido' });
  }
  remember(event.callId, event);
  broadcast(event.callId, event);
  res.json({ ok: true });
});

const server = http.createServer(app);
const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false });

wss.on('connection', (ws, req) => {
  const callId = new URL(req.url, 'http://relay').searchParams.get('callId') || '';

  let room = rooms.get(callId);
  if (!room) {
    room = new Set();
    rooms.set(callId, room);
  }
  room.add(ws);

  for (const event of backlog.get(callId) || []) {
    ws.send(JSON.stringify(event));
  }

  ws.on('close', () => {
    const current = rooms.get(callId);
    if (!current) return;
    current.delete(ws);
    if (current.size === 0) rooms.delete(callId);
  });

  ws.on('error', (err) => {
    console.error(`[relay] error en WebSocket (callId=${callId}):`, err.message);
  });
});

server.listen(PORT, HOST, () => {
  console.log(`[relay] escuchando en ${HOST || '*'}:${PORT}`);
  console.log('[relay] endpoints: GET /health, POST /event, WS /ws?callId=<id>');
});
