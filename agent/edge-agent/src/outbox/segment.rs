//! One outbox segment file and the record encoding.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{OutboxError, io};
use crate::mqtt::Outgoing;

const MAGIC: u8 = 0xEA;
const HEADER: usize = 9;

pub struct Segment {
    pub id: u64,
    path: Option<PathBuf>,
    file: Option<File>,
    pub bytes: u64,
    pub count: u64,
}

impl Segment {
    fn path(dir: &Path, id: u64) -> PathBuf {
        dir.join(format!("{id:016}.seg"))
    }

    pub fn create(dir: &Path, id: u64) -> Result<Segment, OutboxError> {
        let path = Self::path(dir, id);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        Ok(Segment { id, path: Some(path), file: Some(file), bytes: 0, count: 0 })
    }

    /// Opens an existing segment, counting its readable records.
    pub fn scan(dir: &Path, id: u64) -> Result<Segment, OutboxError> {
        let path = Self::path(dir, id);
        let data = std::fs::read(&path).map_err(io(&path))?;
        let (messages, _) = decode_all(&data);
        Ok(Segment { id, path: Some(path), file: None, bytes: data.len() as u64, count: messages.len() as u64 })
    }

    pub fn append(&mut self, record: &[u8]) -> Result<(), OutboxError> {
        let Some(path) = &self.path else { return Ok(()) };
        if self.file.is_none() {
            self.file = Some(OpenOptions::new().append(true).open(path).map_err(io(path))?);
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(record).map_err(io(path))?;
        self.bytes += record.len() as u64;
        self.count += 1;
        Ok(())
    }

    /// Forces the appended records (and the file's length) to the disk.
    pub fn sync(&self) -> Result<(), OutboxError> {
        match (&self.file, &self.path) {
            (Some(f), Some(p)) => f.sync_data().map_err(io(p)),
            _ => Ok(()),
        }
    }

    pub fn read(&self) -> Result<Vec<u8>, OutboxError> {
        match &self.path {
            Some(p) => std::fs::read(p).map_err(io(p)),
            None => Ok(vec![]),
        }
    }

    pub fn delete(self) -> Result<(), OutboxError> {
        drop(self.file);
        match &self.path {
            Some(p) => std::fs::remove_file(p).map_err(io(p)),
            None => Ok(()),
        }
    }

    pub fn quarantine(&mut self) -> Result<(), OutboxError> {
        self.file = None;
        if let Some(p) = self.path.take() {
            std::fs::rename(&p, p.with_extension("corrupt")).map_err(io(&p))?;
        }
        Ok(())
    }
}

pub fn encode(msg: &Outgoing) -> Vec<u8> {
    let topic = msg.topic.as_bytes();
    let mut body = Vec::with_capacity(3 + topic.len() + msg.payload.len());
    body.push(msg.retain as u8);
    body.extend_from_slice(&(topic.len().min(u16::MAX as usize) as u16).to_le_bytes());
    body.extend_from_slice(&topic[..topic.len().min(u16::MAX as usize)]);
    body.extend_from_slice(&msg.payload);
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Every record up to the first damaged one; `false` when damage was found.
pub fn decode_all(data: &[u8]) -> (Vec<Outgoing>, bool) {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        match decode_one(rest) {
            Some((msg, used)) => {
                out.push(msg);
                rest = &rest[used..];
            }
            None => return (out, false),
        }
    }
    (out, true)
}

fn decode_one(data: &[u8]) -> Option<(Outgoing, usize)> {
    if data.len() < HEADER || data[0] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(data[1..5].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(data[5..9].try_into().ok()?);
    let body = data.get(HEADER..HEADER.checked_add(len)?)?;
    if crc32fast::hash(body) != crc || body.len() < 3 {
        return None;
    }
    let topic_len = u16::from_le_bytes([body[1], body[2]]) as usize;
    let topic = body.get(3..3 + topic_len)?;
    let msg = Outgoing {
        topic: String::from_utf8(topic.to_vec()).ok()?,
        payload: body[3 + topic_len..].to_vec(),
        retain: body[0] == 1,
    };
    Some((msg, HEADER + len))
}
