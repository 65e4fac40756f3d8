// A slide shared by another centre: viewer.js reads the allow-listed slide facts from
// cfg.infoUrl (/shared/{peer}/{share_id}) and asks this hook for the tile source. Tiles are the
// derived pyramid's chunks through this node (/shared/{peer}/{share_id}/tiles/{level}/{col}_{row}
// with level 0 = full resolution); OpenSeadragon counts levels the other way (0 = 1 pixel).
(function () {
  "use strict";

  const cfg = JSON.parse(document.getElementById("viewer-config").textContent);

  function tileSource(info) {
    const maxLevel = Math.ceil(Math.log2(Math.max(info.width, info.height)));
    return {
      width: info.width,
      height: info.height,
      tileWidth: info.tile_width,
      tileHeight: info.tile_height,
      tileOverlap: 0,
      minLevel: Math.max(0, maxLevel - (info.level_count - 1)),
      maxLevel,
      // edge chunks are stored whole (padded): OpenSeadragon crops them to the slide's edge
      getTileUrl: (level, col, row) => `${cfg.tileBase}/${maxLevel - level}/${col}_${row}.jpeg`,
    };
  }

  window.iainHooks = {
    adaptSlide(info) {
      // The pseudonym is the only name a shared slide has outside its centre.
      return Object.assign({}, info, {
        id: info.pseudonym, name: info.pseudonym, tileSource: tileSource(info),
      });
    },
  };
})();
