//! Listing a bucket: current objects, every version, and the key-ordered scan under both.

use super::*;

impl Store {
    /// Lists `bucket` in key order: keys starting with `prefix`, after `after`, grouping keys
    /// that contain `delimiter` past the prefix into common prefixes; at most `max` entries.
    /// Keys whose latest version is a delete marker are not listed.
    pub fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&ListCursor>,
        max: usize,
    ) -> Result<ListPage> {
        let view = self.shared.meta.view();
        let (entries, next) =
            self.scan_current(&view, bucket, prefix, delimiter, after, max, false)?;
        let mut page = ListPage {
            next,
            ..ListPage::default()
        };
        for e in entries {
            match e {
                Listed::Key(k, Version::Object(o)) => page.objects.push((k, o)),
                Listed::Key(_, Version::DeleteMarker(_)) => {}
                Listed::Prefix(p) => page.common_prefixes.push(p),
            }
        }
        Ok(page)
    }

    /// Lists every version of the keys in `bucket` (see [`Store::list_objects`] for `prefix`,
    /// `delimiter` and `after`); `after_version` resumes inside the key `after` names.
    pub fn list_versions(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&ListCursor>,
        after_version: Option<VersionId>,
        max: usize,
    ) -> Result<VersionsPage> {
        let mut page = VersionsPage::default();
        if max == 0 {
            self.bucket(bucket)?;
            return Ok(page);
        }
        // One snapshot for the whole page: a concurrent overwrite cannot list a version both
        // as latest and as noncurrent, nor a promotion hide one.
        let view = self.shared.meta.view();
        // Finish the key the version marker points into (resuming by stamp, so a marker
        // version deleted in between loses nothing), then go on after it.
        if let (Some(ListCursor::Key(k)), Some(v)) = (after, after_version) {
            let okey = object_key(bucket, k);
            let current: Option<Version> = view
                .get(Cf::Objects, &okey)?
                .map(|v| from_json(&v))
                .transpose()?;
            let resume = match (current, v) {
                (Some(c), v) if c.version_id() == v => Some(None),
                (_, VersionId::Stamped { seq, .. }) => Some(Some((seq, v))),
                (_, VersionId::Null) => view
                    .get(Cf::NullVersions, &okey)?
                    .map(|s| decode_seq(&s))
                    .transpose()?
                    .map(|seq| Some((seq, VersionId::Null))),
            };
            if let Some(after_version) = resume {
                let rest = self.noncurrent(&view, &okey, after_version, max + 1)?;
                let more = rest.len() > max;
                for ver in rest.into_iter().take(max) {
                    page.versions.push((k.clone(), ver, false));
                }
                if more {
                    let last = page.versions.last().map(|(_, v, _)| v.version_id());
                    page.next = Some((ListCursor::Key(k.clone()), last));
                    return Ok(page);
                }
            }
        }
        let mut count = page.versions.len();
        let want = max - count;
        if want == 0 {
            // The marker's key filled the page: it is truncated if any key follows.
            let (rest, _) = self.scan_current(&view, bucket, prefix, delimiter, after, 1, true)?;
            if !rest.is_empty() {
                page.next = page
                    .versions
                    .last()
                    .map(|(k, v, _)| (ListCursor::Key(k.clone()), Some(v.version_id())));
            }
            return Ok(page);
        }
        let (entries, more) =
            self.scan_current(&view, bucket, prefix, delimiter, after, want, true)?;
        let n = entries.len();
        for (i, e) in entries.into_iter().enumerate() {
            match e {
                Listed::Prefix(p) => {
                    count += 1;
                    if count == max && (i + 1 < n || more.is_some()) {
                        page.next = Some((ListCursor::Prefix(p.clone()), None));
                    }
                    page.common_prefixes.push(p);
                }
                Listed::Key(k, current) => {
                    let okey = object_key(bucket, &k);
                    // No more than the page can take (and one to tell whether more follow).
                    let mut versions = vec![current];
                    versions.extend(self.noncurrent(&view, &okey, None, max - count)?);
                    let total = versions.len();
                    for (j, v) in versions.into_iter().enumerate() {
                        let id = v.version_id();
                        page.versions.push((k.clone(), v, j == 0));
                        count += 1;
                        if count == max {
                            if j + 1 < total || i + 1 < n || more.is_some() {
                                page.next = Some((ListCursor::Key(k), Some(id)));
                            }
                            return Ok(page);
                        }
                    }
                }
            }
            if count == max {
                break;
            }
        }
        Ok(page)
    }

    /// Up to `limit` noncurrent versions of a key, newest first, older than the version
    /// `after` (its seq and id) if given.
    fn noncurrent(
        &self,
        view: &View<'_>,
        okey: &[u8],
        after: Option<(u64, VersionId)>,
        limit: usize,
    ) -> Result<Vec<Version>> {
        let prefix = versions_prefix(okey);
        let start = match after {
            // Slots sort newest first: the next older version sorts right after this one's
            // slot, whether or not it is still there.
            Some((seq, id)) => {
                let mut k = version_key(okey, seq, id);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        view.scan(Cf::Versions, &start, |k, v| {
            if !k.starts_with(&prefix) {
                return Ok(false);
            }
            out.push(from_json(v)?);
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// The key-ordered scan under both listings: current versions (delete markers too when
    /// `markers`) and common prefixes, at most `max` entries, and where to resume if more
    /// follow.
    #[allow(clippy::too_many_arguments)]
    fn scan_current(
        &self,
        view: &View<'_>,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        after: Option<&ListCursor>,
        max: usize,
        markers: bool,
    ) -> Result<(Vec<Listed>, Option<ListCursor>)> {
        self.bucket(bucket)?;
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let base = object_key(bucket, "");
        let mut start = object_key(bucket, prefix);
        match after {
            Some(ListCursor::Key(k)) => {
                let mut s = object_key(bucket, k);
                s.push(0); // strictly after `k`
                start = start.max(s);
            }
            Some(ListCursor::Prefix(p)) => {
                let mut s = object_key(bucket, p);
                s.push(0xFF); // past every key under `p` (UTF-8 never contains 0xFF)
                start = start.max(s);
            }
            None => {}
        }
        let mut entries = Vec::new();
        let mut next = None;
        if max == 0 {
            return Ok((entries, next));
        }
        let full_prefix = object_key(bucket, prefix);
        let mut last: Option<ListCursor> = None;
        loop {
            let mut seek_to: Option<Vec<u8>> = None;
            view.scan(Cf::Objects, &start, |k, v| {
                if !k.starts_with(&full_prefix) {
                    return Ok(false);
                }
                let key = std::str::from_utf8(&k[base.len()..])
                    .map_err(|_| StoreError::Corrupt("key".into()))?;
                let version: Version = from_json(v)?;
                // Skipped before grouping, so a prefix shows only if something under it is
                // listed.
                if !markers && version.object().is_none() {
                    return Ok(true);
                }
                if entries.len() == max {
                    next = last.clone();
                    return Ok(false);
                }
                if let Some(d) = delimiter
                    && let Some(i) = key[prefix.len()..].find(d)
                {
                    let cp = key[..prefix.len() + i + d.len()].to_owned();
                    let mut s = object_key(bucket, &cp);
                    s.push(0xFF);
                    entries.push(Listed::Prefix(cp.clone()));
                    last = Some(ListCursor::Prefix(cp));
                    seek_to = Some(s);
                    return Ok(false);
                }
                entries.push(Listed::Key(key.to_owned(), version));
                last = Some(ListCursor::Key(key.to_owned()));
                Ok(true)
            })?;
            match seek_to {
                Some(s) if next.is_none() => start = s,
                _ => break,
            }
        }
        Ok((entries, next))
    }
}
